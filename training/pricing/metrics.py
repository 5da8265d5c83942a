"""Forecast errors of the demand model and its baselines."""

import numpy as np


def wape(actual, predicted) -> float:
    """Weighted absolute percentage error: sum |actual - predicted| / sum actual."""
    actual, predicted = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    total = actual.sum()
    return float(np.abs(actual - predicted).sum() / total) if total > 0 else float("nan")


def mae(actual, predicted) -> float:
    """Mean absolute error."""
    actual, predicted = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    return float(np.abs(actual - predicted).mean()) if len(actual) else float("nan")
