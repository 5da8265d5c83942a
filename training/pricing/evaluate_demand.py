"""Offline evaluation of the demand model against naive baselines on a time split.

The panel is built from all events up to `until`; its features only look at earlier periods,
so test rows are one-step-ahead forecasts: the model and the baselines both see the actual
units of the periods before each test period. The model trains on periods that end by the
split (the last `valid_periods` of them stop it early, then it is refitted on all of them with
the rounds early stopping chose, `DemandModel.refitted`, as training refits the registered
model) and is scored on periods that start at or after it, for the item x channel series whose
first sale came before the split (a forecast needs a history). A period that straddles the
split is neither trained on nor scored.
"""

import numpy as np
import pandas as pd

from features.errors import InputError
from features.timestamps import to_utc
from models.pricing.demand import (
    PERIOD_LENGTHS,
    DemandModel,
    Period,
    build_panel,
    naive_forecasts,
    with_price,
)
from training.pricing.fit import DEFAULT_VALID_PERIODS, MAX_ROUNDS, validation_length
from training.pricing.metrics import mae, wape


def evaluate_demand(
    events: pd.DataFrame,
    split,
    period: Period = "W",
    until=None,
    catalog: pd.DataFrame | None = None,
    valid_periods: int = DEFAULT_VALID_PERIODS,
    refit: bool = True,
    test_price: str = "observed",
    **params,
) -> dict:
    """WAPE and MAE of the model and the "last_week" and "mean_4w" baselines after `split`.

    `until` (exclusive) ends the scored window (default: the end of the data). The validation
    window is the last `valid_periods` training periods, at most a quarter of them. `params`
    override the model's parameters. `test_price` "observed" gives the model each test period's
    own price (a pricing model is conditional on the price set); "reference" gives it the
    series' reference price instead, a price known before the period (on data where the
    realised mean price depends on the units sold, e.g. quantity discounts, this is the
    stricter test). Returns {"rows": [...], "counts": {...}, ...}.
    """
    if test_price not in ("observed", "reference"):
        raise ValueError(f"test_price must be 'observed' or 'reference', got {test_price!r}")
    panel = build_panel(events, period, end=until, catalog=catalog)
    step = PERIOD_LENGTHS[period]
    split = to_utc(split)
    purchases = events[events["event_type"] == "purchase"]
    first_ts = (
        pd.to_datetime(purchases["ts"], utc=True)
        .groupby([purchases["item_id"].to_numpy(), purchases["channel"].to_numpy()]).min()
        .rename_axis(["item_id", "channel"]).rename("first_sale").reset_index()
    )
    known = panel[["item_id", "channel"]].merge(first_ts, how="left")["first_sale"] < split
    train = panel[panel["period_start"] + step <= split]
    test = panel[(panel["period_start"] >= split) & known.to_numpy()]
    if train.empty or test.empty:
        raise InputError("the split leaves no training or no test periods")
    if not (train["age_periods"] > 0).any():
        raise InputError("the split leaves no training rows: every item x channel needs a "
                         "period after its first sale before the split")

    starts = np.sort(train["period_start"].unique())
    n_valid = validation_length(len(starts), valid_periods)
    model = DemandModel(**{"n_estimators": MAX_ROUNDS, **params})
    if n_valid > 0:
        boundary = starts[-n_valid]
        model.fit(train[train["period_start"] < boundary], train[train["period_start"] >= boundary])
        if refit:
            model = model.refitted(train)
    else:
        model = DemandModel(**params).fit(train)

    actual = test["units"].to_numpy(dtype=float)
    rows = model.normalized(panel).loc[test.index]
    if test_price == "reference":
        rows = with_price(rows, rows["reference_price"].to_numpy(dtype=float))
    forecasts = {"model": model.predict(rows), **naive_forecasts(test).to_dict("series")}
    rows = [
        {"name": name, "wape": wape(actual, predicted), "mae": mae(actual, predicted)}
        for name, predicted in forecasts.items()
    ]
    return {
        "rows": rows,
        "counts": {
            "rows": len(test),
            "items": int(test["item_id"].nunique()),
            "series": int(test.groupby(["item_id", "channel"]).ngroups),
            "test_periods": int(test["period_start"].nunique()),
            "train_rows": len(train),
            "train_periods": len(starts),
            "units": float(actual.sum()),
        },
        "split": split.isoformat(),
        "period": period,
        "test_price": test_price,
        "best_iteration": model.best_iteration,
        "feature_importance": model.feature_importance().head(10).to_dict("records"),
    }
