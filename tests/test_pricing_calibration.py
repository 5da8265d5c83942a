"""The interval check of `evaluate_pricing`: the true elasticity the intervals are scored
against."""

import numpy as np
import pytest

from features.simulator import DEMAND_FAMILIES, simulate_market
from training.pricing.evaluate import true_elasticity


@pytest.fixture(scope="module", params=DEMAND_FAMILIES)
def truth(request):
    return simulate_market(40, 60, 10, seed=3, family=request.param).truth


def test_true_elasticity_at_the_reference_price_is_the_truths(truth):
    reference = truth["reference_price"].to_numpy(dtype=float)
    for day in (0, 100):  # the season scales demand, not its price response
        measured = true_elasticity(truth, reference, day)
        np.testing.assert_allclose(measured, truth["elasticity"].to_numpy(dtype=float),
                                   rtol=1e-4)


def test_true_elasticity_follows_each_familys_shape_away_from_the_reference(truth):
    family = truth["family"].iloc[0]
    reference = truth["reference_price"].to_numpy(dtype=float)
    s = truth["price_sensitivity"].to_numpy(dtype=float)
    at_ref = true_elasticity(truth, reference, 0)
    higher = true_elasticity(truth, reference * 1.2, 0)
    if family == "isoelastic":
        np.testing.assert_allclose(higher, s, rtol=1e-4)
    elif family == "exponential":  # log q = -s (x - 1): elasticity s * x
        np.testing.assert_allclose(higher, 1.2 * s, rtol=1e-4)
    else:  # demand grows more elastic with price
        assert (higher > at_ref).all()


def test_true_elasticity_is_missing_where_true_demand_is_zero():
    truth = simulate_market(40, 60, 10, seed=3, family="linear").truth
    s = truth["price_sensitivity"].to_numpy(dtype=float)
    choke = truth["reference_price"].to_numpy(dtype=float) * (1 + 1 / s)
    assert np.isnan(true_elasticity(truth, choke * 1.5, 0)).all()
