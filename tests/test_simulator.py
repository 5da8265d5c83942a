from datetime import date
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.event_log import EventLog
from features.schemas import EVENT_TYPES, validate_catalog, validate_events
from features.simulator import (
    CHANNEL_PRICES_FILE,
    DEMAND_FAMILIES,
    EPISODE_DAYS,
    STATIC_SHARE,
    TRUTH_PARAMETERS,
    expected_daily_units,
    simulate_market,
    simulate_to_dir,
    write_simulation,
)

SMALL = {"days": 60, "users": 100, "items": 12, "seed": 7}
YEAR = {"days": 365, "users": 50, "items": 24, "seed": 3}
WIDE = {"days": 30, "users": 50, "items": 300, "seed": 5}  # many items, for the truth's spread
LEGACY_COLUMNS = ["base_daily_units", "elasticity", "reference_price", "seasonal_amplitude",
                  "seasonal_peak_day"]  # what an evaluation copied before demand families


@pytest.fixture(scope="module")
def small_market():
    return simulate_market(**SMALL)


@pytest.fixture(scope="module")
def year_market():
    return simulate_market(**YEAR)


@pytest.fixture(scope="module", params=DEMAND_FAMILIES)
def family_year(request):
    """(family, a year's market of that family)."""
    return request.param, simulate_market(**YEAR, family=request.param)


@pytest.fixture(scope="module", params=DEMAND_FAMILIES)
def family_wide(request):
    """(family, a month's market of 300 items of that family)."""
    return request.param, simulate_market(**WIDE, family=request.param)


@pytest.fixture(scope="module")
def mixed_truth():
    """Truth rows of every family in one table, interleaved."""
    truths = [simulate_market(**{**SMALL, "days": 5}, family=family).truth
              for family in DEMAND_FAMILIES]
    mixed = pd.concat(truths, ignore_index=True)
    order = np.argsort(np.arange(len(mixed)) % len(truths[0]), kind="stable")
    return mixed.iloc[order].reset_index(drop=True)


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def day_index(market, events: pd.DataFrame) -> pd.Series:
    start = pd.Timestamp(market.start, tz="UTC")
    return (events["ts"] - start).dt.days


def price_matrix(market) -> np.ndarray:
    """Price of each truth row (rows) on each day (columns)."""
    wide = market.prices.pivot(index=["item_id", "channel"], columns="day", values="price")
    return wide.loc[pd.MultiIndex.from_frame(market.truth[["item_id", "channel"]])].to_numpy()


def units_matrix(market) -> np.ndarray:
    """Realised units of each truth row (rows) on each day (columns)."""
    purchases = market.events[market.events["event_type"] == "purchase"]
    sold = purchases.assign(day=day_index(market, purchases)).groupby(
        ["item_id", "channel", "day"]).size()
    rows = pd.MultiIndex.from_frame(market.truth[["item_id", "channel"]])
    wide = sold.unstack("day").reindex(index=rows, columns=range(market.prices["day"].max() + 1))
    return wide.fillna(0).to_numpy()


def repriced_items(market) -> pd.Series:
    """Per item: whether its price changed on any channel on any day."""
    changes = np.diff(price_matrix(market), axis=1) != 0
    return pd.Series(changes.any(axis=1), index=market.truth["item_id"]).groupby(level=0).any()


def documented_units(row: pd.Series, price: float, day: int) -> float:
    """The module docstring's formula for one truth row, written out independently."""
    x, s = price / row.reference_price, row.price_sensitivity
    if row.family == "exponential":
        shape = np.exp(-s * (x - 1))
    elif row.family == "isoelastic":
        shape = x ** -s
    elif row.family == "logit":
        a = s + np.log(row.reference_share / (1 - row.reference_share))
        shape = np.exp(a - s * x) / (1 + np.exp(a - s * x)) / row.reference_share
    elif row.family == "kinked":
        kink = row.kink_price / row.reference_price

        def exponent(at: float) -> float:
            return s * min(at, kink) + 3 * s * max(at - kink, 0.0)
        shape = np.exp(exponent(1.0) - exponent(x))
    else:
        shape = max(0.0, 1 - s * (x - 1))
    season = 1 + row.seasonal_amplitude * np.cos(2 * np.pi * (day - row.seasonal_peak_day) / 365)
    return row.base_daily_units * shape * season


def expected_profit(truth: pd.DataFrame, price: np.ndarray) -> np.ndarray:
    """Expected daily profit of each truth row at prices of shape (rows, k), on day 0."""
    margin = (price * (1 - truth["fee_percent"].to_numpy()[:, None] / 100)
              - truth["fee_fixed"].to_numpy()[:, None] - truth["unit_cost"].to_numpy()[:, None])
    return margin * expected_daily_units(truth, price, 0)


# Determinism and files


def test_simulate_market_repeats_itself_for_same_arguments(small_market):
    again = simulate_market(**SMALL)
    for name in ("events", "catalog", "channels", "truth", "prices", "channel_prices"):
        pd.testing.assert_frame_equal(getattr(again, name), getattr(small_market, name))
    assert again.start == small_market.start == date(2025, 1, 1)
    assert (small_market.truth["family"] == "exponential").all()


def test_simulate_market_differs_for_other_seed(small_market):
    other = simulate_market(**{**SMALL, "seed": SMALL["seed"] + 1})
    assert not other.truth["base_daily_units"].equals(small_market.truth["base_daily_units"])
    assert not other.catalog["current_price"].equals(small_market.catalog["current_price"])
    assert len(other.events) != len(small_market.events)


def test_simulate_market_differs_for_other_family_on_the_same_catalog(small_market):
    for family in DEMAND_FAMILIES[1:]:
        other = simulate_market(**SMALL, family=family)
        assert (other.truth["family"] == family).all()
        assert other.catalog["title"].equals(small_market.catalog["title"])
        assert not other.truth["optimal_price"].equals(small_market.truth["optimal_price"])
        assert not other.catalog["current_price"].equals(small_market.catalog["current_price"])
        assert len(other.events) != len(small_market.events)


@pytest.mark.parametrize("family", DEMAND_FAMILIES)
def test_write_simulation_writes_identical_files_for_same_arguments(tmp_path, family):
    first = write_simulation(simulate_market(**SMALL, family=family), tmp_path / "a")
    second = write_simulation(simulate_market(**SMALL, family=family), tmp_path / "b")
    assert first == second
    files = files_of(tmp_path / "a")
    assert files == files_of(tmp_path / "b")
    assert {"catalog.csv", "channels.csv", CHANNEL_PRICES_FILE, "ground_truth.parquet"} <= set(
        files)
    assert any(name.startswith("events/date=2025-01-01/") for name in files)


def test_simulate_to_dir_writes_what_write_simulation_writes(tmp_path):
    counts = simulate_to_dir(out_dir=tmp_path / "direct", **SMALL, family="logit")
    market = simulate_market(**SMALL, family="logit")
    assert counts == write_simulation(market, tmp_path / "two_steps")
    assert files_of(tmp_path / "direct") == files_of(tmp_path / "two_steps")


def test_write_simulation_round_trips_events_catalog_channels_and_truth(tmp_path, small_market):
    counts = write_simulation(small_market, tmp_path)
    events = small_market.events
    by_type = events["event_type"].value_counts()
    assert counts == {**{t: int(by_type.get(t, 0)) for t in EVENT_TYPES},
                      "events": len(events), "events_written": len(events),
                      "items": SMALL["items"], "channels": 3}

    stored = EventLog(tmp_path / "events").read()
    expected = events.sort_values(["ts", "event_id"], ignore_index=True)
    pd.testing.assert_frame_equal(stored, expected)

    catalog = validate_catalog(pd.read_csv(tmp_path / "catalog.csv", dtype=str,
                                           keep_default_na=False))
    pd.testing.assert_frame_equal(catalog, small_market.catalog)
    channels = pd.read_csv(tmp_path / "channels.csv")
    assert list(channels.columns) == ["channel", "fee_percent", "fee_fixed"]
    truth = pd.read_parquet(tmp_path / "ground_truth.parquet")
    assert (truth["start"] == small_market.start).all()
    pd.testing.assert_frame_equal(truth.drop(columns="start"), small_market.truth)
    assert set(TRUTH_PARAMETERS) <= set(truth.columns)

    again = write_simulation(small_market, tmp_path)
    assert again["events_written"] == 0


@pytest.mark.parametrize("family", ["exponential", "linear"])
def test_channel_prices_file_holds_every_channels_price_on_the_last_day(tmp_path, family):
    market = simulate_market(**SMALL, family=family)
    write_simulation(market, tmp_path)
    stored = pd.read_csv(tmp_path / CHANNEL_PRICES_FILE)
    assert list(stored.columns) == ["item_id", "channel", "current_price"]
    pd.testing.assert_frame_equal(stored, market.channel_prices, check_dtype=False)
    last = market.prices[market.prices["day"] == SMALL["days"] - 1]
    assert len(stored) == len(last) == SMALL["items"] * 3
    merged = stored.merge(last, on=["item_id", "channel"], validate="one_to_one")
    assert (merged["current_price"] == merged["price"]).all()
    web = stored[stored["channel"] == "web"].set_index("item_id")["current_price"]
    assert web.to_dict() == market.catalog.set_index("item_id")["current_price"].to_dict()
    # The channels' prices differ (markups, per-channel changes): the web price is not enough.
    assert (stored.groupby("item_id")["current_price"].nunique() > 1).any()


def test_simulated_events_and_catalog_pass_canonical_validators(small_market):
    pd.testing.assert_frame_equal(validate_events(small_market.events), small_market.events)
    pd.testing.assert_frame_equal(validate_catalog(small_market.catalog), small_market.catalog)
    assert small_market.events["event_id"].is_unique
    assert {"view", "add_to_cart", "remove_from_cart", "purchase"} <= set(
        small_market.events["event_type"])


# Price histories


def test_simulated_prices_stay_within_bounds_with_charm_endings(family_year):
    _, market = family_year
    catalog = market.catalog
    assert (catalog["min_price"] <= catalog["current_price"]).all()
    assert (catalog["current_price"] <= catalog["max_price"]).all()
    expected_min = (catalog["unit_cost"] * 1.25 + 0.5).round(2)
    np.testing.assert_allclose(catalog["min_price"], expected_min)
    prices = market.prices["price"]
    bounds = catalog.set_index("item_id").loc[market.prices["item_id"]]
    assert (prices.to_numpy() >= bounds["min_price"].to_numpy()).all()
    assert (prices.to_numpy() <= bounds["max_price"].to_numpy()).all()
    cents = (prices * 100).round().astype(int) % 100
    assert cents.isin([49, 99]).all()


def test_a_share_of_items_is_never_repriced_on_any_channel(family_year):
    _, market = family_year
    repriced = repriced_items(market)
    assert (~repriced).sum() == round(STATIC_SHARE * YEAR["items"])
    assert 0.2 <= (~repriced).mean() <= 0.3


def test_the_current_price_is_the_list_price_on_every_channel(family_year):
    _, market = family_year
    current = market.channel_prices.merge(market.truth[["item_id", "channel", "base_price"]],
                                          on=["item_id", "channel"], validate="one_to_one")
    assert (current["current_price"] == current["base_price"]).all()


def test_repriced_series_have_long_flat_stretches(family_year):
    _, market = family_year
    prices = price_matrix(market)
    changed = np.diff(prices, axis=1) != 0
    repriced = changed.any(axis=1)
    runs = []
    for row in prices[repriced]:
        edges = np.concatenate([[0], np.flatnonzero(np.diff(row) != 0) + 1, [len(row)]])
        runs.extend(np.diff(edges))
    assert np.median(runs) >= 21  # weeks, not days
    assert changed[repriced].mean() < 0.05  # a change on fewer than one day in twenty


def test_price_changes_are_item_wide_or_per_channel_and_episodes_return(family_year):
    _, market = family_year
    prices = price_matrix(market)
    row, day = np.nonzero(np.diff(prices, axis=1) != 0)
    channels_changing = pd.Series(1, index=pd.MultiIndex.from_arrays(
        [market.truth["item_id"].to_numpy()[row], day])).groupby(level=[0, 1]).sum()
    assert (channels_changing == 1).any() and (channels_changing == 3).any()

    # A temporary test or promotion leaves the price and comes back to it 7 to 28 days later.
    returns = []
    for series in prices:
        edges = np.flatnonzero(np.diff(series) != 0) + 1
        for begin, end in pairwise(edges):
            if series[begin - 1] == series[end]:
                returns.append(end - begin)
    assert len(returns) > 5
    assert np.mean([EPISODE_DAYS[0] <= n <= EPISODE_DAYS[1] for n in returns]) > 0.8


def test_list_prices_are_off_the_optimum_on_both_sides(family_wide):
    family, market = family_wide
    truth = market.truth
    ratio = truth["optimal_price"] / truth["base_price"]
    assert 0.6 <= ratio.median() <= 1.1
    assert (ratio < 0.8).mean() > 0.1, family
    assert (ratio > 1.2).mean() > 0.1, family


# Demand


def test_expected_daily_units_is_non_increasing_in_price(family_wide):
    family, market = family_wide
    truth = market.truth
    grid = np.linspace(0.01, 80.0, 400)
    prices = np.tile(grid, (len(truth), 1))
    for day in (0, 100, 200):
        units = expected_daily_units(truth, prices, day)
        assert units.shape == (len(truth), len(grid))
        assert (units >= 0).all()
        assert (np.diff(units, axis=1) <= 0).all()
        # strictly falling wherever there is demand
        assert (np.diff(units, axis=1)[units[:, 1:] > 1e-300] < 0).all()
        at_reference = expected_daily_units(truth, truth["reference_price"], day)
        assert (at_reference > 0).all()
    zero = (expected_daily_units(truth, prices, 0) == 0).any(axis=1)
    assert zero.any() == (family == "linear")  # only linear demand has a choke price


def test_expected_daily_units_follows_the_documented_form(family_wide):
    _, market = family_wide
    truth = market.truth
    for position, price, day in ((4, 7.5, 40), (100, 3.0, 200), (301, 19.99, 364)):
        row = truth.iloc[[position]]
        expected = documented_units(row.iloc[0], price, day)
        np.testing.assert_allclose(expected_daily_units(row, price, day), [expected],
                                   rtol=1e-12)


def test_expected_daily_units_broadcasts_over_rows_prices_and_days(mixed_truth):
    truth = mixed_truth
    assert set(truth["family"]) == set(DEMAND_FAMILIES)
    rows = [truth.iloc[i] for i in range(len(truth))]
    one_each = np.array([documented_units(r, 5.0, 10) for r in rows])
    np.testing.assert_allclose(expected_daily_units(truth, 5.0, 10), one_each, rtol=1e-12)
    own = truth["reference_price"].to_numpy() * 0.8
    days = np.arange(len(truth)) % 365
    np.testing.assert_allclose(
        expected_daily_units(truth, own, days),
        [documented_units(r, p, d) for r, p, d in zip(rows, own, days, strict=True)],
        rtol=1e-12)
    grid = np.outer(truth["reference_price"].to_numpy(), [0.5, 1.0, 1.5])
    both = expected_daily_units(truth, grid, np.arange(3)[None, :])
    assert both.shape == (len(truth), 3)
    np.testing.assert_allclose(
        both[:, 2], [documented_units(r, p, 2) for r, p in zip(rows, grid[:, 2], strict=True)],
        rtol=1e-12)


def test_truth_parameters_are_all_expected_daily_units_needs(mixed_truth):
    grid = np.outer(mixed_truth["reference_price"].to_numpy(), [0.7, 1.3])
    full = expected_daily_units(mixed_truth, grid, 30)
    only = mixed_truth[list(TRUTH_PARAMETERS)]
    np.testing.assert_array_equal(expected_daily_units(only, grid, 30), full)
    with pytest.raises(KeyError, match="price_sensitivity"):
        expected_daily_units(only.drop(columns="price_sensitivity"), grid, 30)
    with pytest.raises(ValueError, match="family"):
        expected_daily_units(only.assign(family="quadratic"), grid, 30)


def test_an_exponential_truth_in_the_earlier_layout_still_evaluates(year_market):
    # training/pricing/evaluate.py copies these columns only: exponential, sensitivity = elasticity
    truth = year_market.truth
    grid = np.outer(truth["reference_price"].to_numpy(), [0.6, 1.0, 1.7])
    np.testing.assert_allclose(expected_daily_units(truth[LEGACY_COLUMNS], grid, 50),
                               expected_daily_units(truth, grid, 50), rtol=1e-12)


def test_elasticity_is_the_point_elasticity_at_the_reference_price(family_wide):
    _, market = family_wide
    truth = market.truth
    ref, step = truth["reference_price"].to_numpy(), 1e-5
    up = expected_daily_units(truth, ref * (1 + step), 10)
    down = expected_daily_units(truth, ref * (1 - step), 10)
    point = -(np.log(up) - np.log(down)) / (np.log1p(step) - np.log1p(-step))
    np.testing.assert_allclose(point, truth["elasticity"], rtol=1e-6)


def test_price_sensitivity_is_heterogeneous_and_shifted_by_channel(family_wide):
    family, market = family_wide
    truth = market.truth
    by_item = truth.pivot(index="item_id", columns="channel", values="price_sensitivity")
    elasticity = truth.pivot(index="item_id", columns="channel", values="elasticity")
    assert elasticity["web"].max() - elasticity["web"].min() > 0.5
    if family == "isoelastic":
        # The excess over 1 grows by 15% and 30%, unless the catalog bounds hold s back.
        etsy = (by_item["etsy"] - 1) / (by_item["web"] - 1)
        amazon = (by_item["amazon"] - 1) / (by_item["web"] - 1)
        assert np.isclose(etsy, 1.15).mean() > 0.9 and np.isclose(amazon, 1.3).mean() > 0.9
        assert truth["elasticity"].between(1.0, 3.5, inclusive="right").all()
    else:
        np.testing.assert_allclose(by_item["etsy"] - by_item["web"], 0.15)
        np.testing.assert_allclose(by_item["amazon"] - by_item["web"], 0.3)
        below_kink = ~(truth["kink_price"] <= truth["reference_price"])  # NaN: no kink
        elasticity_below = truth["elasticity"].where(below_kink, truth["elasticity"] / 3)
        assert elasticity_below.between(0.6, 3.55).all()
        assert elasticity["web"].max() - elasticity["web"].min() > 2.0
        assert (elasticity["web"] < 1).mean() > 0.03  # inelastic items: raising prices pays
        assert (elasticity["web"] > 2.5).mean() > 0.05
    kink = truth.pivot(index="item_id", columns="channel", values="kink_price")
    if family == "kinked":  # one competitors' price per item, on every channel
        assert (kink.nunique(axis=1) == 1).all() and kink.notna().all().all()
    else:
        assert kink.isna().all().all()
    share = truth["reference_share"]
    if family == "logit":
        assert share.between(0.1, 0.6).all() and share.max() - share.min() > 0.3
    else:
        assert share.isna().all()
    by_item_amplitude = truth.groupby("item_id")["seasonal_amplitude"].first()
    assert by_item_amplitude.max() - by_item_amplitude.min() > 0.2


def test_optimal_price_maximises_expected_profit(family_wide):
    _, market = family_wide
    truth = market.truth
    fractions = np.linspace(0.05, 2.6, 2551)  # steps of 0.1% of the reference price
    grid = truth["reference_price"].to_numpy()[:, None] * fractions
    profit = expected_profit(truth, grid)
    best = grid[np.arange(len(truth)), profit.argmax(axis=1)]
    step = truth["reference_price"].to_numpy() * (fractions[1] - fractions[0])
    assert (best > grid[:, 0]).all() and (best < grid[:, -1]).all()
    # within one grid step, plus half a cent for the rounding of optimal_price
    assert (np.abs(best - truth["optimal_price"].to_numpy()) <= step + 0.005).all()
    optimal = truth["optimal_price"].to_numpy()[:, None]
    at_optimum = expected_profit(truth, optimal)
    # rounding to cents costs less than 1/100,000 of the profit
    assert (at_optimum >= profit.max(axis=1, keepdims=True) * (1 - 1e-5)).all()
    for factor in (0.9, 1.1):
        assert (expected_profit(truth, optimal * factor) < at_optimum).all()


def test_optimal_prices_lie_within_the_catalog_bounds(family_wide):
    _, market = family_wide
    truth = market.truth
    bounds = market.catalog.set_index("item_id").loc[truth["item_id"]]
    assert (truth["optimal_price"].to_numpy() >= bounds["min_price"].to_numpy()).all()
    assert (truth["optimal_price"].to_numpy() <= bounds["max_price"].to_numpy()).all()
    assert set(truth["format"]) == {"PDF", "printed"}


# Events


def test_every_purchase_session_views_and_carts_the_item_before_purchase(small_market):
    events = small_market.events
    purchases = events[events["event_type"] == "purchase"]
    assert len(purchases) > 100
    assert purchases["session_id"].is_unique
    for step in ("view", "add_to_cart"):
        earlier = events[events["event_type"] == step][["session_id", "item_id", "ts"]]
        pairs = purchases.merge(earlier, on=["session_id", "item_id"], suffixes=("", "_step"))
        pairs = pairs[pairs["ts_step"] < pairs["ts"]]
        assert set(pairs["event_id"]) == set(purchases["event_id"]), step
    sessions = events.groupby("session_id")
    assert (sessions["channel"].nunique() == 1).all()
    assert (sessions["user_id"].nunique(dropna=False) == 1).all()
    assert (sessions["ts"].agg(lambda ts: ts.dt.date.nunique()) == 1).all()
    assert (events["quantity"] == 1).all()
    assert events["unit_price"].notna().all()


def test_events_carry_the_channel_price_of_their_day(family_year):
    _, market = family_year
    events = market.events[market.events["event_type"] != "return"]
    shown = events.assign(day=day_index(market, events)).merge(
        market.prices, on=["item_id", "channel", "day"], how="left", validate="many_to_one")
    assert (shown["unit_price"] == shown["price"]).all()


def test_simulated_sessions_include_abandoned_ones(small_market):
    events = small_market.events
    buying = set(events.loc[events["event_type"].isin(["purchase", "return"]), "session_id"])
    abandoned = set(events["session_id"]) - buying
    ratio = len(abandoned) / (events["event_type"] == "purchase").sum()
    assert 2.0 <= ratio <= 3.0
    removals = events[events["event_type"] == "remove_from_cart"]
    assert len(removals) > 0
    assert set(removals["session_id"]) <= abandoned


def test_returns_follow_a_purchase_of_a_printed_item(year_market):
    events = year_market.events
    returns = events[events["event_type"] == "return"]
    assert len(returns) > 0
    printed = year_market.catalog.loc[year_market.catalog["title"].str.endswith("(printed)"),
                                      "item_id"]
    assert returns["item_id"].isin(printed).all()
    purchases = events[events["event_type"] == "purchase"]
    keys = ["item_id", "channel", "unit_price"]
    pairs = returns.merge(purchases, on=keys, suffixes=("", "_purchase"))
    delay = (pairs["ts"].dt.normalize() - pairs["ts_purchase"].dt.normalize()).dt.days
    same_user = (pairs["user_id"] == pairs["user_id_purchase"]) | (
        pairs["user_id"].isna() & pairs["user_id_purchase"].isna())
    matched = pairs[delay.between(3, 20) & same_user]
    assert set(matched["event_id"]) == set(returns["event_id"])
    assert (returns["ts"] < pd.Timestamp(year_market.start, tz="UTC")
            + pd.Timedelta(days=YEAR["days"])).all()


def test_realised_units_match_expected_units_over_a_year(family_year):
    _, market = family_year
    expected = expected_daily_units(market.truth, price_matrix(market),
                                    np.arange(YEAR["days"])[None, :])
    realised = units_matrix(market)
    assert expected.sum() > 3000
    assert realised.sum() == (market.events["event_type"] == "purchase").sum()
    assert realised.sum() == pytest.approx(expected.sum(), rel=0.05)


def test_realised_units_follow_the_price_changes(family_year):
    family, market = family_year
    prices = price_matrix(market)
    days = np.arange(YEAR["days"])[None, :]
    expected = expected_daily_units(market.truth, prices, days)
    realised = units_matrix(market)
    median = np.median(prices, axis=1, keepdims=True)
    # Units each series would sell on the same days at its usual (median) price.
    usual = expected_daily_units(market.truth, median, days)
    index = {}
    for side, cells in {"below": prices < median, "above": prices > median}.items():
        assert realised[cells].sum() > 200, side
        assert realised[cells].sum() == pytest.approx(expected[cells].sum(), rel=0.1), side
        index[side] = realised[cells].sum() / usual[cells].sum()
    assert index["below"] > 1.1 and index["above"] < 0.9, (family, index)


def test_simulated_events_use_three_channels_with_their_fees(small_market):
    fees = small_market.channels.set_index("channel")
    assert list(small_market.channels.columns) == ["channel", "fee_percent", "fee_fixed"]
    assert fees.loc["web"].tolist() == [2.9, 0.30]
    assert fees.loc["etsy"].tolist() == [6.5, 0.20]
    assert fees.loc["amazon"].tolist() == [15.0, 0.0]
    purchases = small_market.events[small_market.events["event_type"] == "purchase"]
    assert set(purchases["channel"]) == set(fees.index)
    assert set(small_market.truth["channel"]) == set(fees.index)


def test_simulated_purchases_mix_users_and_guests(year_market):
    purchases = year_market.events[year_market.events["event_type"] == "purchase"]
    assert purchases["user_id"].isna().mean() == pytest.approx(0.15, abs=0.03)
    assert purchases["user_id"].nunique() > YEAR["users"] * 0.8


# Arguments


@pytest.mark.parametrize("argument", ["days", "users", "items"])
def test_simulate_market_rejects_empty_sizes(argument):
    with pytest.raises(ValueError, match=argument):
        simulate_market(**{**SMALL, argument: 0})


def test_an_unknown_family_is_a_clear_error(tmp_path):
    message = ("family must be one of exponential, isoelastic, logit, linear, kinked, "
               "got 'cobb-douglas'")
    with pytest.raises(ValueError, match=message):
        simulate_market(**SMALL, family="cobb-douglas")
    with pytest.raises(ValueError, match=message):
        simulate_to_dir(out_dir=tmp_path / "out", **SMALL, family="cobb-douglas")
    assert not (tmp_path / "out").exists()
