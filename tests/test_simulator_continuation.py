from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from features.schemas import validate_events
from features.simulator import (
    DEMAND_FAMILIES,
    continue_market,
    expected_daily_units,
    simulate_market,
    write_simulation,
)
from training.pricing.market import read_simulation

SMALL = {"days": 60, "users": 50, "items": 8, "seed": 3}
MORE = {"days": 30, "seed": 11, "users": 40}  # the continuation


@pytest.fixture(scope="module")
def market():
    return simulate_market(**SMALL)


@pytest.fixture(scope="module")
def continued(market):
    return continue_market(market, **MORE)


def new_events(market, result) -> pd.DataFrame:
    return result.events.iloc[len(market.events):]


def day_of(market, events: pd.DataFrame) -> pd.Series:
    """The absolute day index of each event, from the market's start."""
    return (events["ts"] - pd.Timestamp(market.start, tz="UTC")).dt.days


def last_prices(market) -> pd.Series:
    last = market.prices[market.prices["day"] == market.prices["day"].max()]
    return last.set_index(["item_id", "channel"])["price"]


def event_prices(events: pd.DataFrame, prices: pd.Series) -> np.ndarray:
    """The price of each event's item x channel in `prices` (indexed by item_id, channel)."""
    return prices.loc[pd.MultiIndex.from_frame(events[["item_id", "channel"]])].to_numpy()


def test_a_continuation_follows_the_market_at_its_last_prices(market, continued):
    old_days = SMALL["days"]
    events = new_events(market, continued)
    pd.testing.assert_frame_equal(continued.events.iloc[:len(market.events)], market.events)
    assert (events["event_type"] == "purchase").sum() > 0
    days = day_of(market, events)
    assert days.min() >= old_days and days.max() < old_days + MORE["days"]
    assert continued.events["event_id"].is_unique
    assert not set(events["session_id"]) & set(market.events["session_id"])
    pd.testing.assert_frame_equal(validate_events(continued.events), continued.events)
    assert (events["unit_price"].to_numpy() == event_prices(events, last_prices(market))).all()

    assert sorted(continued.prices["day"].unique()) == list(range(old_days + MORE["days"]))
    pd.testing.assert_frame_equal(continued.prices[continued.prices["day"] < old_days]
                                  .reset_index(drop=True), market.prices.reset_index(drop=True))
    pd.testing.assert_frame_equal(continued.channel_prices, market.channel_prices)
    pd.testing.assert_frame_equal(continued.catalog, market.catalog)
    pd.testing.assert_frame_equal(continued.truth, market.truth)
    pd.testing.assert_frame_equal(continued.channels, market.channels)
    assert continued.start == market.start


def test_a_continuation_of_a_continuation_keeps_ids_unique(market, continued):
    again = continue_market(continued, days=10, seed=MORE["seed"], users=MORE["users"])
    assert again.events["event_id"].is_unique
    assert again.prices["day"].max() == SMALL["days"] + MORE["days"] + 10 - 1
    assert day_of(market, new_events(continued, again)).min() == SMALL["days"] + MORE["days"]


def test_a_price_plan_sets_the_prices_of_its_days(market):
    last = last_prices(market)
    planned, final = ("P0001", "etsy"), ("P0002", "web")
    cut = round(last[planned] * 0.8, 2)
    plan = pd.DataFrame({
        "item_id": [planned[0]] * 10 + [final[0]],
        "channel": [planned[1]] * 10 + [final[1]],
        "day": [*range(5, 15), MORE["days"] - 1],
        "price": [cut] * 10 + [9.99],
    })
    result = continue_market(market, **MORE, price_plan=plan)

    events = new_events(market, result)
    events = events[(events["item_id"] == planned[0]) & (events["channel"] == planned[1])
                    & (events["event_type"] != "return")]  # returns carry the purchase's price
    in_plan = (day_of(market, events) - SMALL["days"]).between(5, 14)
    assert in_plan.sum() > 0 and (~in_plan).sum() > 0
    assert (events.loc[in_plan, "unit_price"] == cut).all()
    assert (events.loc[~in_plan, "unit_price"] == last[planned]).all()

    prices = result.prices.set_index(["item_id", "channel", "day"])["price"]
    assert prices[(*planned, SMALL["days"] + 5)] == cut
    assert prices[(*planned, SMALL["days"] + 15)] == last[planned]
    current = result.channel_prices.set_index(["item_id", "channel"])["current_price"]
    assert current[final] == 9.99
    assert current[planned] == last[planned]
    assert (current.drop(final) == last.drop(final)).all()
    assert result.catalog.set_index("item_id").loc[final[0], "current_price"] == 9.99
    assert market.catalog.set_index("item_id").loc[final[0], "current_price"] == last[final]


def test_a_continuation_repeats_itself_for_the_same_seed(market, continued):
    pd.testing.assert_frame_equal(continue_market(market, **MORE).events, continued.events)
    other = continue_market(market, **{**MORE, "seed": MORE["seed"] + 1})
    assert not new_events(market, other).reset_index(drop=True).equals(
        new_events(market, continued).reset_index(drop=True))


def test_a_continuation_round_trips_through_files(tmp_path, market, continued):
    write_simulation(continued, tmp_path)
    stored = read_simulation(tmp_path)
    assert len(stored.events) == len(continued.events)
    assert stored.events["event_id"].is_unique
    pd.testing.assert_frame_equal(stored.channel_prices, continued.channel_prices,
                                  check_dtype=False)
    truth = pd.read_parquet(tmp_path / "ground_truth.parquet")
    assert (truth["start"] == market.start).all()
    assert stored.events["ts"].max() < pd.Timestamp(
        market.start + timedelta(days=SMALL["days"] + MORE["days"]), tz="UTC")


@pytest.mark.parametrize("family", DEMAND_FAMILIES)
def test_a_higher_planned_price_sells_fewer_units(family):
    market = simulate_market(**SMALL, family=family)
    last = last_prices(market)
    days = 120
    plan = pd.DataFrame([(item, channel, day, round(price * 1.5, 2))
                         for (item, channel), price in last.items() for day in range(days)],
                        columns=["item_id", "channel", "day", "price"])
    kept = continue_market(market, days, seed=1, users=20)
    raised = continue_market(market, days, seed=1, users=20, price_plan=plan)

    def expected(result) -> np.ndarray:
        wide = result.prices.pivot(index=["item_id", "channel"], columns="day", values="price")
        rows = pd.MultiIndex.from_frame(result.truth[["item_id", "channel"]])
        price = wide.loc[rows].to_numpy()[:, SMALL["days"]:]
        return expected_daily_units(result.truth, price, SMALL["days"] + np.arange(days))

    assert (expected(raised) <= expected(kept)).all()
    assert expected(raised).sum() < 0.9 * expected(kept).sum()
    sold = [(new_events(market, r)["event_type"] == "purchase").sum() for r in (kept, raised)]
    assert sold[1] < sold[0]


@pytest.mark.parametrize("field, change", [
    ("item_id", {"item_id": "P9999"}),
    ("channel", {"channel": "ebay"}),
    ("'day'", {"day": MORE["days"]}),
    ("'day'", {"day": -1}),
    ("'day'", {"day": 1.5}),
    ("'price'", {"price": 0.0}),
    ("'price'", {"price": np.nan}),
    ("'price'", {"price": np.inf}),
])
def test_a_bad_price_plan_is_a_clear_error(market, field, change):
    row = {"item_id": "P0001", "channel": "web", "day": 0, "price": 5.0, **change}
    with pytest.raises(ValueError, match=field):
        continue_market(market, **MORE, price_plan=pd.DataFrame([row]))


def test_a_price_plan_without_a_column_or_with_a_repeated_day_is_a_clear_error(market):
    row = {"item_id": "P0001", "channel": "web", "day": 3, "price": 5.0}
    with pytest.raises(ValueError, match="price"):
        continue_market(market, **MORE, price_plan=pd.DataFrame([row]).drop(columns="price"))
    with pytest.raises(ValueError, match="'item_id', 'channel', 'day' repeat P0001 on web day 3"):
        continue_market(market, **MORE, price_plan=pd.DataFrame([row, {**row, "price": 6.0}]))


@pytest.mark.parametrize("argument, value", [("days", 0), ("users", 0), ("seed", -1)])
def test_continue_market_rejects_bad_arguments(market, argument, value):
    with pytest.raises(ValueError, match=argument):
        continue_market(market, **{**MORE, argument: value})


def test_two_continuations_from_one_seed_sell_the_same_units_where_their_prices_agree(
        market, continued):
    item, channel = "P0001", "etsy"
    cut = last_prices(market).loc[(item, channel)] * 0.5
    plan = pd.DataFrame({"item_id": item, "channel": channel, "day": range(MORE["days"]),
                         "price": cut})
    tested = continue_market(market, **MORE, price_plan=plan)

    def sold(result) -> pd.Series:
        events = new_events(market, result)
        purchases = events[events["event_type"] == "purchase"]
        return purchases.groupby(["item_id", "channel", day_of(market, purchases)]).size()

    keep, test = sold(continued), sold(tested)
    series = (item, channel)
    assert keep.loc[series].sum() > 0
    pd.testing.assert_series_equal(test.drop(index=series), keep.drop(index=series))
    assert test.loc[series].sum() > keep.loc[series].sum()
