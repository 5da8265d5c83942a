"""Fitting the demand model before its validation window, scored there beside the naive
baselines, then refitted on every period for pricing."""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.errors import InputError
from models.pricing.demand import DemandModel, Period, build_panel, naive_forecasts
from training.pricing.metrics import mae, wape

DEFAULT_VALID_PERIODS = 8
MAX_ROUNDS = 1000  # boosting rounds allowed before early stopping


@dataclass
class FittedDemand:
    """A demand model fitted on every complete period (`model`, which prices), the one fitted
    before the validation window (`validated`) and its validation scores."""

    model: DemandModel
    validated: DemandModel
    panel: pd.DataFrame
    valid: pd.DataFrame  # validation rows (series past their first period)
    valid_start: pd.Timestamp
    metrics: dict[str, dict[str, float]]  # model / last_week / mean_4w -> wape, mae


def score_rows(valid: pd.DataFrame, predicted) -> dict[str, float]:
    """WAPE and MAE of `predicted` against the rows' `units`."""
    actual = valid["units"].to_numpy(dtype=float)
    return {"wape": wape(actual, predicted), "mae": mae(actual, predicted)}


def validation_length(periods: int, valid_periods: int = DEFAULT_VALID_PERIODS) -> int:
    """How many of the last periods validate: `valid_periods`, at most a quarter of all."""
    return min(valid_periods, periods // 4)


def fit_demand(
    events: pd.DataFrame, catalog: pd.DataFrame | None, period: Period = "W", end=None,
    valid_periods: int = DEFAULT_VALID_PERIODS, **params,
) -> FittedDemand:
    """Fit a `DemandModel` on the complete periods before `end` (default: the midnight after
    the last event) but the last `valid_periods` (at most a quarter), which stop it early and
    score it beside the naive baselines; then refit it on every complete period with the
    rounds early stopping chose, so prices are read against the latest weeks' sales and
    prices. `params` override the model parameters."""
    panel = build_panel(events, period, end=end, catalog=catalog)
    starts = np.sort(panel["period_start"].unique())
    n_valid = validation_length(len(starts), valid_periods)
    if n_valid < 1:
        raise InputError(f"too little history to validate: {len(starts)} complete period(s) "
                         f"of '{period}', at least 4 needed")
    valid_start = pd.Timestamp(starts[-n_valid])
    train = panel[panel["period_start"] < valid_start]
    valid = panel[(panel["period_start"] >= valid_start) & (panel["age_periods"] > 0)]
    if valid.empty or not (train["age_periods"] > 0).any():
        raise InputError("too little history: no training or no validation rows")
    validated = DemandModel(**{"n_estimators": MAX_ROUNDS, **params})
    validated.fit(train, valid)
    baselines = naive_forecasts(valid)
    predicted = validated.predict(validated.normalized(panel).loc[valid.index])
    metrics = {"model": score_rows(valid, predicted),
               **{name: score_rows(valid, baselines[name]) for name in baselines.columns}}
    return FittedDemand(validated.refitted(panel), validated, panel, valid, valid_start, metrics)
