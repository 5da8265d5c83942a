from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.event_log import EventLog
from features.schemas import EVENT_TYPES, validate_catalog, validate_events
from features.simulator import (
    PRICE_FACTORS,
    expected_daily_units,
    simulate_market,
    simulate_to_dir,
    write_simulation,
)

SMALL = {"days": 60, "users": 100, "items": 12, "seed": 7}
YEAR = {"days": 365, "users": 50, "items": 24, "seed": 3}


@pytest.fixture(scope="module")
def small_market():
    return simulate_market(**SMALL)


@pytest.fixture(scope="module")
def year_market():
    return simulate_market(**YEAR)


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


def units_sold(market) -> pd.DataFrame:
    """Realised units per item x channel x day, zero on days without a sale."""
    purchases = market.events[market.events["event_type"] == "purchase"]
    sold = (purchases.assign(day=day_index(market, purchases))
            .groupby(["item_id", "channel", "day"]).size().rename("units").reset_index())
    daily = market.prices.merge(sold, on=["item_id", "channel", "day"], how="left")
    return daily.fillna({"units": 0})


def test_simulate_market_repeats_itself_for_same_arguments(small_market):
    again = simulate_market(**SMALL)
    for name in ("events", "catalog", "channels", "truth", "prices"):
        pd.testing.assert_frame_equal(getattr(again, name), getattr(small_market, name))
    assert again.start == small_market.start == date(2025, 1, 1)


def test_simulate_market_differs_for_other_seed(small_market):
    other = simulate_market(**{**SMALL, "seed": SMALL["seed"] + 1})
    assert not other.truth["base_daily_units"].equals(small_market.truth["base_daily_units"])
    assert not other.catalog["current_price"].equals(small_market.catalog["current_price"])
    assert len(other.events) != len(small_market.events)


def test_write_simulation_writes_identical_files_for_same_arguments(tmp_path):
    first = write_simulation(simulate_market(**SMALL), tmp_path / "a")
    second = write_simulation(simulate_market(**SMALL), tmp_path / "b")
    assert first == second
    files = files_of(tmp_path / "a")
    assert files == files_of(tmp_path / "b")
    assert {"catalog.csv", "channels.csv", "ground_truth.parquet"} <= set(files)
    assert any(name.startswith("events/date=2025-01-01/") for name in files)


def test_simulate_to_dir_writes_what_write_simulation_writes(tmp_path):
    counts = simulate_to_dir(out_dir=tmp_path / "direct", **SMALL)
    assert counts == write_simulation(simulate_market(**SMALL), tmp_path / "two_steps")
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

    again = write_simulation(small_market, tmp_path)
    assert again["events_written"] == 0


def test_simulated_events_and_catalog_pass_canonical_validators(small_market):
    pd.testing.assert_frame_equal(validate_events(small_market.events), small_market.events)
    pd.testing.assert_frame_equal(validate_catalog(small_market.catalog), small_market.catalog)
    assert small_market.events["event_id"].is_unique
    assert {"view", "add_to_cart", "remove_from_cart", "purchase"} <= set(
        small_market.events["event_type"])


def test_simulated_catalog_prices_stay_within_bounds(small_market):
    catalog = small_market.catalog
    assert (catalog["min_price"] <= catalog["current_price"]).all()
    assert (catalog["current_price"] <= catalog["max_price"]).all()
    expected_min = (catalog["unit_cost"] * 1.25 + 0.5).round(2)
    np.testing.assert_allclose(catalog["min_price"], expected_min)
    web = small_market.prices[(small_market.prices["channel"] == "web")
                              & (small_market.prices["day"] == SMALL["days"] - 1)]
    assert web.set_index("item_id")["price"].to_dict() == \
        catalog.set_index("item_id")["current_price"].to_dict()
    floors = small_market.prices["item_id"].map(catalog.set_index("item_id")["min_price"])
    assert (small_market.prices["price"] >= floors).all()


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


def test_expected_daily_units_decreases_with_price_for_every_row(small_market):
    truth = small_market.truth
    grid = np.linspace(0.5, 60.0, 50)
    prices = np.tile(grid, (len(truth), 1))
    for day in (0, 100, 200):
        units = expected_daily_units(truth, prices, day)
        assert units.shape == (len(truth), len(grid))
        assert (units > 0).all()
        assert (np.diff(units, axis=1) < 0).all()


def test_expected_daily_units_follows_the_documented_form(small_market):
    row = small_market.truth.iloc[[4]]
    r = row.iloc[0]
    price, day = 7.5, 40
    season = 1 + r.seasonal_amplitude * np.cos(2 * np.pi * (day - r.seasonal_peak_day) / 365)
    expected = (r.base_daily_units * np.exp(-r.elasticity * (price / r.reference_price - 1))
                * season)
    np.testing.assert_allclose(expected_daily_units(row, price, day), [expected])


def test_elasticity_is_the_point_elasticity_at_the_reference_price(small_market):
    truth = small_market.truth
    ref, step = truth["reference_price"].to_numpy(), 1e-4
    up = expected_daily_units(truth, ref * (1 + step), 10)
    down = expected_daily_units(truth, ref * (1 - step), 10)
    point = -(np.log(up) - np.log(down)) / (np.log1p(step) - np.log1p(-step))
    np.testing.assert_allclose(point, truth["elasticity"], rtol=1e-6)


def test_simulated_elasticities_are_realistic(year_market):
    truth = year_market.truth
    assert truth["elasticity"].between(0.8, 2.8).all()
    by_item = truth.pivot(index="item_id", columns="channel", values="elasticity")
    np.testing.assert_allclose(by_item["etsy"] - by_item["web"], 0.15)
    np.testing.assert_allclose(by_item["amazon"] - by_item["web"], 0.3)
    assert by_item["web"].between(0.8, 2.5).all()
    assert by_item["web"].max() - by_item["web"].min() > 1.0


def expected_profit(truth: pd.DataFrame, price: np.ndarray) -> np.ndarray:
    """Expected daily profit of each truth row at prices of shape (rows, k), on day 0."""
    margin = (price * (1 - truth["fee_percent"].to_numpy()[:, None] / 100)
              - truth["fee_fixed"].to_numpy()[:, None] - truth["unit_cost"].to_numpy()[:, None])
    return margin * expected_daily_units(truth, price, 0)


def test_optimal_price_maximises_expected_profit(year_market):
    truth = year_market.truth.iloc[[0, 1, 2, 7, 20, 33, 47, 58, 71]]
    assert set(truth["channel"]) == {"web", "etsy", "amazon"}
    assert set(truth["format"]) == {"PDF", "printed"}
    fractions = np.linspace(0.2, 4.0, 381)  # steps of 1% of the reference price
    grid = truth["reference_price"].to_numpy()[:, None] * fractions
    best = grid[np.arange(len(truth)), expected_profit(truth, grid).argmax(axis=1)]
    step = truth["reference_price"].to_numpy() * (fractions[1] - fractions[0])
    assert (best > grid[:, 0]).all() and (best < grid[:, -1]).all()
    # within one grid step, plus half a cent for the rounding of optimal_price
    assert (np.abs(best - truth["optimal_price"].to_numpy()) <= step + 0.005).all()
    optimal = truth["optimal_price"].to_numpy()[:, None]
    at_optimum = expected_profit(truth, optimal)
    for factor in (0.9, 1.1):
        assert (expected_profit(truth, optimal * factor) < at_optimum).all()


def test_optimal_prices_lie_on_both_sides_of_list_prices_and_within_bounds(year_market):
    truth = year_market.truth
    ratio = truth["optimal_price"] / truth["base_price"]
    assert 0.75 <= ratio.median() <= 1.3
    assert (ratio < 0.8).mean() > 0.1
    assert (ratio > 1.2).mean() > 0.1
    bounds = year_market.catalog.set_index("item_id").loc[truth["item_id"]]
    assert (truth["optimal_price"].to_numpy() >= bounds["min_price"].to_numpy()).all()
    assert (truth["optimal_price"].to_numpy() <= bounds["max_price"].to_numpy()).all()


def test_realised_units_match_expected_units_over_a_year(year_market):
    expected = expected_daily_units(year_market.truth, price_matrix(year_market),
                                    np.arange(YEAR["days"])[None, :])
    realised = (year_market.events["event_type"] == "purchase").sum()
    assert expected.sum() > 3000
    assert realised == pytest.approx(expected.sum(), rel=0.05)


def test_realised_units_are_higher_below_list_price_than_above(year_market):
    daily = units_sold(year_market).merge(
        year_market.truth[["item_id", "channel", "base_price"]], on=["item_id", "channel"])
    relative = daily["price"] / daily["base_price"]
    assert relative.round(2).isin([1.0]).mean() > 0.5
    assert relative[relative != 1].between(min(PRICE_FACTORS) - 0.1,
                                           max(PRICE_FACTORS) + 0.1).all()
    daily["side"] = np.select([relative < 1, relative > 1], ["below", "above"], "list")
    means = daily.pivot_table(index=["item_id", "channel"], columns="side", values="units",
                              aggfunc="mean")
    both = means.dropna()
    assert len(both) >= len(means) / 3
    assert both["below"].sum() > 1.1 * both["list"].sum()
    assert both["list"].sum() > 1.1 * both["above"].sum()


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


@pytest.mark.parametrize("argument", ["days", "users", "items"])
def test_simulate_market_rejects_empty_sizes(argument):
    with pytest.raises(ValueError, match=argument):
        simulate_market(**{**SMALL, argument: 0})
