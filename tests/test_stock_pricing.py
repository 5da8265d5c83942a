"""Stock-aware pricing: scarce items are not discounted and sell at most their stock,
overstocked items are priced to clear, untracked items are priced as before."""

import numpy as np
import pandas as pd
import pytest

from features.schemas import InvalidRecordsError, validate_catalog
from models.pricing.guardrails import Guardrails
from models.pricing.optimizer import optimize_prices
from tests.test_optimizer import LOOSE, exponential_demand, offer

RULES = Guardrails(**LOOSE)


def stocked(stock, restock_days=None, **fields) -> pd.DataFrame:
    """One weekly offer with `stock` units on hand (None: not tracked)."""
    return pd.DataFrame([offer(**fields) | {"stock_on_hand": stock, "restock_days": restock_days,
                                            "period_days": 7.0}])


def suggestion(offers: pd.DataFrame, guardrails: Guardrails = RULES) -> pd.Series:
    result = optimize_prices(offers, exponential_demand, guardrails, "test")
    assert result.skipped.empty
    return result.suggestions.iloc[0]


def test_an_item_that_sells_out_before_restock_is_not_discounted():
    # Elastic demand: the unconstrained best is well below the current price of 10.
    elastic = {"elasticity": 6.0, "reference_price": 10.0, "base_units": 7.0, "unit_cost": 0.5}
    free = suggestion(stocked(None, **elastic))
    assert free["suggested_price"] < 10.0
    # 7 units a week at 10.00 and 2 in stock: gone in 2 days, restock in 28.
    scarce = suggestion(stocked(2, **elastic))
    assert scarce["suggested_price"] >= 10.0
    assert "scarce" in scarce["explanation"]
    # Expected units never exceed the stock's share of a week: 2 units over 28 days.
    assert scarce["expected_units_suggested"] <= 2 * 7 / 28 + 1e-9


def test_a_scarce_item_is_raised_when_its_stock_would_sell_anyway():
    demand = {"elasticity": 1.0, "reference_price": 10.0, "base_units": 7.0, "unit_cost": 0.5}
    plenty = suggestion(stocked(10_000, restock_days=14, **demand))
    scarce = suggestion(stocked(3, restock_days=14, **demand))
    # At 1.5 units per 14 days the stock sells at any nearby price: charge more for it.
    assert scarce["suggested_price"] > plenty["suggested_price"]


def test_overstock_is_priced_to_clear_and_says_so():
    demand = {"elasticity": 2.0, "reference_price": 20.0, "base_units": 5.0, "unit_cost": 8.0}
    normal = suggestion(stocked(50, **demand))  # about 10 weeks of cover: neither
    untracked = suggestion(stocked(None, **demand))
    overstock = suggestion(stocked(5_000, **demand))
    assert normal["suggested_price"] == untracked["suggested_price"]
    assert overstock["suggested_price"] < untracked["suggested_price"]
    assert "overstocked" in overstock["explanation"]
    # The min margin floor keeps the full unit cost.
    floor = Guardrails(**LOOSE | {"min_margin_percent": 10})
    assert suggestion(stocked(5_000, **demand), floor)["suggested_price"] >= 8.8


def test_an_item_stock_serves_all_its_channels():
    rows = pd.concat([stocked(4, item_id="i1", channel=channel, elasticity=6.0,
                              reference_price=10.0, base_units=7.0, unit_cost=0.5)
                      for channel in ("web", "etsy")], ignore_index=True)
    result = optimize_prices(rows, exponential_demand, RULES, "test").suggestions
    assert (result["suggested_price"] >= 10.0).all()
    assert result["expected_units_suggested"].sum() <= 4 * 7 / 28 + 1e-9


def test_bad_stock_values_are_refused_by_name():
    with pytest.raises(ValueError, match="stock_on_hand must be missing or finite and >= 0"):
        optimize_prices(stocked(-1), exponential_demand, RULES, "test")
    with pytest.raises(ValueError, match="restock_days must be missing or finite and > 0"):
        optimize_prices(stocked(3, restock_days=0), exponential_demand, RULES, "test")


def catalog_row(**extra) -> dict:
    return {"item_id": "a", "title": "A", "category": "sewing", "unit_cost": 1.0,
            "current_price": 5.0, "currency": "GBP", "min_price": 1.0, "max_price": None} | extra


def test_catalog_stock_columns_are_optional_and_checked():
    plain = validate_catalog(pd.DataFrame([catalog_row()]))
    assert plain["stock_on_hand"].isna().all()
    stocked_row = validate_catalog(pd.DataFrame([catalog_row(stock_on_hand=12,
                                                             restock_days=21)]))
    assert stocked_row.loc[0, "stock_on_hand"] == 12
    with pytest.raises(InvalidRecordsError, match="field 'stock_on_hand'"):
        validate_catalog(pd.DataFrame([catalog_row(stock_on_hand=-3)]))
    with pytest.raises(InvalidRecordsError, match="field 'restock_days'"):
        validate_catalog(pd.DataFrame([catalog_row(stock_on_hand=3, restock_days=0)]))


def test_guardrails_need_overstock_beyond_restock():
    with pytest.raises(ValueError, match="overstock_days"):
        Guardrails(restock_days=60, overstock_days=30)
    assert np.isclose(Guardrails().overstock_cost_share, 0.5)
