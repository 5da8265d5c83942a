import math
import re
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.pricing.guardrails import Guardrails, GuardrailsError, load_guardrails
from models.pricing.optimizer import (
    OFFER_COLUMNS,
    RULES,
    SKIPPED_COLUMNS,
    SUGGESTION_COLUMNS,
    naive_argmax,
    optimize_prices,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
FEES = {"web": (2.9, 0.30), "etsy": (6.5, 0.20), "amazon": (15.0, 0.0)}
# Wide enough that only the rule under test can bind in the constructed cases.
LOOSE = {"min_margin_percent": 0, "max_change_percent": 200, "price_endings": [0.49, 0.99],
         "max_channel_spread_percent": 100, "trust_band_percent": 200}
TOL = 1e-6


def offer(item_id="i1", channel="web", *, unit_cost=2.0, fee_percent=0.0, fee_fixed=0.0,
          current_price=10.0, min_price=0.0, max_price=None, observed=(9.0, 11.0),
          reference_price=20.0, elasticity=2.0, base_units=5.0) -> dict:
    """One offer row; the last three fields parametrise `exponential_demand`."""
    observed_min, observed_max = observed or (None, None)
    return {"item_id": item_id, "channel": channel, "unit_cost": unit_cost,
            "fee_percent": fee_percent, "fee_fixed": fee_fixed, "current_price": current_price,
            "min_price": min_price, "max_price": max_price, "observed_min_price": observed_min,
            "observed_max_price": observed_max, "reference_price": reference_price,
            "elasticity": elasticity, "base_units": base_units}


def exponential_demand(rows: pd.DataFrame, prices: np.ndarray) -> np.ndarray:
    """q(p) = A * exp(-e * (p / r - 1)), the simulator's demand curve, per offer row."""
    return rows["base_units"].to_numpy() * np.exp(
        -rows["elasticity"].to_numpy() * (prices / rows["reference_price"].to_numpy() - 1)
    )


def closed_form_optimum(row: dict) -> float:
    fee_share = row["fee_percent"] / 100
    cost = (row["unit_cost"] or 0.0) + row["fee_fixed"]
    return cost / (1 - fee_share) + row["reference_price"] / row["elasticity"]


def model_profit(row: dict, price: float) -> float:
    units = row["base_units"] * math.exp(-row["elasticity"] * (price / row["reference_price"] - 1))
    margin = price * (1 - row["fee_percent"] / 100) - row["fee_fixed"] - (row["unit_cost"] or 0.0)
    return margin * units


def optimize(rows: list[dict], demand=exponential_demand, **guardrails):
    return optimize_prices(pd.DataFrame(rows), demand, Guardrails(**{**LOOSE, **guardrails}),
                           "demand-v1")


def only_suggestion(result) -> pd.Series:
    assert result.skipped.empty, result.skipped.to_dict("records")
    assert len(result.suggestions) == 1
    return result.suggestions.iloc[0]


# ---------------------------------------------------------------- every rule, for any input


@st.composite
def guardrail_sets(draw) -> Guardrails:
    return Guardrails(
        min_margin_percent=draw(st.floats(0, 100)),
        max_change_percent=draw(st.floats(0.1, 150)),
        price_endings=draw(st.lists(st.integers(0, 99).map(lambda cents: cents / 100),
                                    max_size=4, unique=True)),
        max_channel_spread_percent=draw(st.floats(0, 60)),
        trust_band_percent=draw(st.floats(0, 60)),
        price_step=draw(st.sampled_from([0.01, 0.05, 0.1, 0.25, 1.0])),
    )


@st.composite
def offer_tables(draw) -> pd.DataFrame:
    keys = draw(st.lists(st.tuples(st.sampled_from(["i1", "i2"]), st.sampled_from(list(FEES))),
                         min_size=2, max_size=6, unique=True))
    item_prices = {item_id: draw(st.floats(0.5, 40)) for item_id in ("i1", "i2")}
    rows = []
    for item_id, channel in keys:
        current = item_prices[item_id] * draw(st.floats(0.8, 1.25))
        observed = draw(st.sampled_from([True, True, True, False]))  # mostly observed
        observed_min = current * draw(st.floats(0.3, 1.5))
        observed_max = observed_min * draw(st.floats(1, 1.6))
        max_factor = draw(st.none() | st.floats(1, 3))
        cost_share = draw(st.none() | st.floats(0, 0.8))
        rows.append({
            "item_id": item_id, "channel": channel,
            "unit_cost": None if cost_share is None else cost_share * current,
            "fee_percent": draw(st.floats(0, 40)), "fee_fixed": draw(st.floats(0, 2)),
            "current_price": current, "min_price": current * draw(st.floats(0, 1)),
            "max_price": None if max_factor is None else current * max_factor,
            "observed_min_price": observed_min if observed else None,
            "observed_max_price": observed_max if observed else None,
        })
    return pd.DataFrame(rows, columns=list(OFFER_COLUMNS))


def arbitrary_demand(units: list[float]):
    """Non-monotone demand: each price's units picked from `units` by the price's cents."""
    table = np.array(units)

    def expected_units(rows: pd.DataFrame, prices: np.ndarray) -> np.ndarray:
        cents = np.round(prices * 100).astype(np.int64)
        return table[(cents * 7919 + rows["channel"].str.len().to_numpy()) % len(table)]

    return expected_units


@settings(max_examples=200, deadline=None)
@given(
    guardrails=guardrail_sets(),
    offers=offer_tables(),
    units=st.lists(st.floats(0, 1e12), min_size=1, max_size=30),
)
def test_keep_every_suggestion_inside_every_rule_for_any_demand(guardrails, offers, units):
    result = optimize_prices(offers, arbitrary_demand(units), guardrails, "any")

    reported = [*zip(result.suggestions["item_id"], result.suggestions["channel"], strict=True),
                *zip(result.skipped["item_id"], result.skipped["channel"], strict=True)]
    assert sorted(reported) == sorted(zip(offers["item_id"], offers["channel"], strict=True))
    assert all(isinstance(reason, str) and reason for reason in result.skipped["reason"])

    rows = offers.set_index(["item_id", "channel"])
    for suggestion in result.suggestions.itertuples():
        row = rows.loc[(suggestion.item_id, suggestion.channel)]
        price, current = suggestion.suggested_price, row["current_price"]
        fee_share = row["fee_percent"] / 100
        cost = 0.0 if pd.isna(row["unit_cost"]) else row["unit_cost"]
        profit_per_unit = price * (1 - fee_share) - row["fee_fixed"] - cost
        assert profit_per_unit >= cost * guardrails.min_margin_percent / 100 - TOL
        assert price >= row["min_price"] - TOL
        assert pd.isna(row["max_price"]) or price <= row["max_price"] + TOL
        assert abs(price / current - 1) <= guardrails.max_change_percent / 100 + TOL
        trust = guardrails.trust_band_percent / 100
        # The band spans the observed prices and the current price.
        low = min(row["observed_min_price"], row["current_price"])
        high = max(row["observed_max_price"], row["current_price"])
        assert price >= low * (1 - trust) - TOL
        assert price <= high * (1 + trust) + TOL
        assert price > 0
        if guardrails.price_endings:
            cents = round(price * 100)
            assert abs(price * 100 - cents) < TOL
            assert cents % 100 in {round(e * 100) for e in guardrails.price_endings}
        assert set(suggestion.bound_by) <= set(RULES)
    for _, prices in result.suggestions.groupby("item_id")["suggested_price"]:
        assert prices.max() / prices.min() - 1 <= guardrails.max_channel_spread_percent / 100 + TOL


# ---------------------------------------------------------------- optimum and bindings


def test_find_closed_form_optimum_with_loose_guardrails():
    rows = [offer(channel=channel, fee_percent=fee_percent, fee_fixed=fee_fixed, unit_cost=3.0,
                  current_price=15.0, observed=(12.0, 18.0), elasticity=1.5)
            for channel, (fee_percent, fee_fixed) in FEES.items()]
    result = optimize(rows, price_endings=[], price_step=0.01, max_change_percent=300,
                      trust_band_percent=1000, max_channel_spread_percent=1000)

    assert result.skipped.empty
    for row, suggestion in zip(rows, result.suggestions.itertuples(), strict=True):
        assert suggestion.channel == row["channel"]
        assert suggestion.suggested_price == pytest.approx(closed_form_optimum(row), abs=0.01)
        assert suggestion.bound_by == []
        assert suggestion.expected_profit_suggested > suggestion.expected_profit_current


def test_report_no_binding_rule_when_the_optimum_is_allowed():
    suggestion = only_suggestion(optimize([offer()]))  # optimum 2 + 20 / 2 = 12.00

    assert suggestion.suggested_price == 11.99
    assert suggestion.bound_by == []
    assert suggestion.explanation.startswith("Raise web price 10.00 -> 11.99: expected profit +")
    assert suggestion.model_version == "demand-v1"


@pytest.mark.parametrize(
    ("rule", "guardrails", "changes", "expected_price"),
    [
        ("max_change", {"max_change_percent": 10}, {}, 10.99),
        ("trust_band", {"trust_band_percent": 5}, {}, 11.49),  # top 11 * 1.05 = 11.55
        ("min_margin", {"min_margin_percent": 600}, {}, 14.49),  # floor 2 * 7 = 14.00
        ("min_price", {}, {"min_price": 13.0}, 13.49),
        ("max_price", {}, {"max_price": 11.2}, 10.99),
        ("price_endings", {}, {"current_price": 12.0}, 11.99),  # 12.00 is the optimum itself
    ],
)
def test_name_binding_rule_in_bound_by(rule, guardrails, changes, expected_price):
    suggestion = only_suggestion(optimize([offer(**changes)], **guardrails))

    assert suggestion.suggested_price == pytest.approx(expected_price)
    assert suggestion.bound_by == [rule]
    assert suggestion.explanation.endswith(")") and "(bound by " in suggestion.explanation


def test_explain_suggestion_capped_by_max_change():
    suggestion = only_suggestion(optimize([offer()], max_change_percent=10))

    assert suggestion.explanation.startswith("Raise web price 10.00 -> 10.99: expected profit +")
    assert suggestion.explanation.endswith("(bound by max change 10%)")


def test_exclude_current_price_below_a_new_margin_floor():
    # 11.99 is nearly the optimum 12.00, but the floor 2 * (1 + 560%) = 13.20 rules it out.
    suggestion = only_suggestion(optimize([offer(current_price=11.99)], min_margin_percent=560))

    assert suggestion.suggested_price == 13.49
    assert suggestion.bound_by == ["min_margin"]
    assert suggestion.expected_profit_suggested < suggestion.expected_profit_current


def test_keep_current_price_when_demand_is_flat():
    suggestion = only_suggestion(optimize([offer(current_price=10.99)],
                                          demand=lambda rows, prices: np.zeros(len(prices))))

    assert suggestion.suggested_price == 10.99
    assert suggestion.explanation == "Keep web price 10.99: the most profitable allowed price"


def test_report_expected_units_revenue_and_profit_of_both_prices():
    row = offer()
    suggestion = only_suggestion(optimize([row]))

    for price, kind in ((10.0, "current"), (11.99, "suggested")):
        units = exponential_demand(pd.DataFrame([row]), np.array([price]))[0]
        assert suggestion[f"expected_units_{kind}"] == pytest.approx(units)
        assert suggestion[f"expected_revenue_{kind}"] == pytest.approx(price * units)
        assert suggestion[f"expected_profit_{kind}"] == pytest.approx(model_profit(row, price))
    assert list(optimize([row]).suggestions.columns) == list(SUGGESTION_COLUMNS)


# ---------------------------------------------------------------- channel spread


def test_choose_channels_jointly_within_spread_when_optima_are_far_apart():
    rows = [offer(channel="web", current_price=20.0, observed=(10.0, 40.0)),  # optimum 12
            offer(channel="amazon", current_price=20.0, observed=(10.0, 40.0),
                  reference_price=60.0)]  # optimum 32
    result = optimize(rows, max_channel_spread_percent=20)

    assert result.skipped.empty
    prices = dict(zip(result.suggestions["channel"], result.suggestions["suggested_price"],
                      strict=True))
    assert max(prices.values()) / min(prices.values()) - 1 <= 0.2
    assert any("channel_spread" in bound for bound in result.suggestions["bound_by"])
    grid = [k + e for k in range(2, 60) for e in (0.49, 0.99)]  # every allowed price
    best_total = max(model_profit(rows[0], web) + model_profit(rows[1], amazon)
                     for web, amazon in product(grid, grid) if max(web, amazon)
                     <= min(web, amazon) * 1.2)
    total = sum(model_profit(row, prices[row["channel"]]) for row in rows)
    assert total == pytest.approx(best_total, rel=1e-12)


def test_skip_item_when_its_channels_cannot_meet_the_spread():
    rows = [offer(channel="web", min_price=9.5, max_price=11.0),
            offer(channel="etsy", current_price=20.0, min_price=19.5, observed=(19.0, 21.0))]
    result = optimize(rows, max_channel_spread_percent=10)

    assert result.suggestions.empty
    assert list(result.skipped["channel"]) == ["web", "etsy"]
    assert all(reason.startswith("no prices fit within the 10% channel spread: web allows 9.99")
               for reason in result.skipped["reason"])


def test_skip_channel_without_candidates_and_optimise_the_others():
    rows = [offer(channel="web", unit_cost=11.0, observed=(9.0, 10.0)),  # floor 11 above band
            offer(channel="etsy")]
    result = optimize(rows, trust_band_percent=5, max_channel_spread_percent=0)

    assert list(result.skipped["channel"]) == ["web"]
    assert list(result.suggestions["channel"]) == ["etsy"]
    assert result.suggestions["suggested_price"].iloc[0] == 11.49


# ---------------------------------------------------------------- skips and inputs


def test_skip_offer_when_margin_floor_is_above_trust_band():
    result = optimize([offer(unit_cost=11.0)], min_margin_percent=20, trust_band_percent=5)

    assert result.suggestions.empty
    assert list(result.skipped.columns) == list(SKIPPED_COLUMNS)
    assert result.skipped["reason"].tolist() == [
        "the min margin floor 13.20 is above the trust band's top 11.55"
    ]


def test_skip_offer_when_no_allowed_ending_fits_between_the_bounds():
    result = optimize([offer(current_price=12.2, observed=(12.0, 12.4))],
                      max_change_percent=5, trust_band_percent=0)

    assert result.skipped["reason"].tolist() == [
        "no price ending in .49/.99 lies between the trust band's bottom 12.00 "
        "and the trust band's top 12.40"
    ]


def test_skip_offer_without_observed_prices():
    result = optimize([offer(observed=None), offer(channel="etsy")])

    assert result.skipped["channel"].tolist() == ["web"]
    assert "no observed prices" in result.skipped["reason"].iloc[0]
    assert result.suggestions["channel"].tolist() == ["etsy"]


def test_reject_demand_model_returning_negative_units():
    with pytest.raises(ValueError, match="non-negative"):
        optimize([offer()], demand=lambda rows, prices: -np.ones(len(prices)))


def test_reject_offers_missing_a_column():
    with pytest.raises(ValueError, match="observed_max_price"):
        optimize_prices(pd.DataFrame([offer()]).drop(columns="observed_max_price"),
                        exponential_demand, Guardrails(), "v")


def test_find_unconstrained_optimum_with_naive_argmax():
    rows = [offer(), offer(channel="amazon", fee_percent=15.0, reference_price=30.0)]
    factors = np.round(np.arange(0.2, 4.0, 0.001), 3)
    best = naive_argmax(pd.DataFrame(rows), exponential_demand, grid_factors=factors)

    assert best.columns.tolist() == ["item_id", "channel", "price"]
    assert best["channel"].tolist() == ["web", "amazon"]
    for row, price in zip(rows, best["price"], strict=True):
        assert price == pytest.approx(closed_form_optimum(row), abs=0.01)


# ---------------------------------------------------------------- guardrails files


def test_load_example_guardrails_as_the_defaults():
    assert load_guardrails(REPO_ROOT / "guardrails.example.yaml") == Guardrails()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("max_change_percent: -5\n", "max_change_percent"),
        ("price_endings: [0.49, 1.5]\n", "price_endings[1]"),
        ("price_step: 0.015\n", "price_step"),
        ("max_discount_percent: 5\n", "max_discount_percent"),
    ],
)
def test_name_file_and_field_of_bad_guardrails(tmp_path, text, field):
    path = tmp_path / "guardrails.yaml"
    path.write_text(text)

    with pytest.raises(GuardrailsError, match=re.escape(f"field '{field}'")) as error:
        load_guardrails(path)
    assert str(path) in str(error.value)


def test_reject_guardrails_file_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "guardrails.yaml"
    path.write_text("- 0.49\n- 0.99\n")

    with pytest.raises(GuardrailsError, match="expected a mapping"):
        load_guardrails(path)


def test_compute_margin_floor_with_unknown_cost_as_fees_only():
    floors = Guardrails(min_margin_percent=50).margin_floor([4.0, np.nan], [20.0, 20.0],
                                                            [0.4, 0.4])

    assert floors == pytest.approx([(4.0 * 1.5 + 0.4) / 0.8, 0.4 / 0.8])
