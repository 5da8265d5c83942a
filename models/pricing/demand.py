"""A LightGBM demand model for pricing: expected units per item x channel x period at a price.

Panel (`build_panel`). One row per item x channel x period ("D": UTC day, "W": UTC week starting
Monday), for every period from the series' first purchase to the last complete period before
`end`, zero-sale periods included. `units` is the sum of purchase quantities (returns are not
netted). `price` is the quantity-weighted mean purchase `unit_price` of the period; in a period
without sales it is the latest `unit_price` of any other non-return event of the period (the
simulator's views and carts carry the price shown), else the last known price carried forward
(the list price most likely still applied). `price_source` says which: "sales", "events" or
"carried". Returns are never a price source: they carry the price of an earlier purchase.

Features. Every feature of a period is computed from earlier periods only, except the price
features, which describe the price set for the period itself (the decision being evaluated):
- `reference_price`: median of the series' observed ("sales"/"events") period prices up to the
  previous period (an expanding median, so no future leak); the series' first period, which has
  no history, uses its own price.
- `price_ratio` = price / reference_price and `log_price_ratio` = its log: the price decision.
  Both are monotone non-increasing features of the model, so is predicted demand in price.
- `log_reference_price`: the item x channel's price level (cheap items sell more units).
- `units_lag1`: units of the previous period; `units_mean4` / `units_mean13`: mean units of the
  previous 4 / 13 periods (fewer at the start of a series); `units_mean_all`: mean units of all
  previous periods of the series (the item-level level); `sale_share`: share of previous periods
  with a sale (intermittency); `periods_since_sale`: periods since the last period with a sale.
- `age_periods`: periods since the series' first sale (trend / life-cycle); 0 on the first row.
- `channel_trend`: log ratio of the channel's total units over the previous 4 periods to those
  over the previous 13 (per period; shop-wide momentum).
- `doy_sin`, `doy_cos`: day of year of the period's middle on the unit circle; `week_of_year`:
  ISO week of the period's middle; `day_of_week`: of the period start (always 0 for weeks).
- `item_id`, `channel` and `category` (from a catalog, when given): categorical codes fitted by
  the model (values unseen in training are missing). The item code lets the trees learn
  item-specific levels.

Model (`DemandModel`). `lightgbm.LGBMRegressor`, Poisson objective (predictions are expected
units), monotone constraint -1 on the two price-ratio features and 0 elsewhere: for a fixed row,
raising the price raises both, so the prediction cannot rise. The first period of a series is
left out of training: it has a sale by construction.
"""

from collections.abc import Sequence
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.errors import InputError
from features.timestamps import to_utc
from models.pricing.optimizer import ExpectedUnits

Period = Literal["W", "D"]
"""A demand period: `W`, weeks starting on Monday (UTC), or `D`, days."""
PERIOD_LENGTHS: dict[str, pd.Timedelta] = {"D": pd.Timedelta(days=1), "W": pd.Timedelta(days=7)}
SERIES_KEYS = ["item_id", "channel"]
PRICE_FEATURES = ("log_price_ratio", "price_ratio")
CATEGORICAL_FEATURES = ("item_id", "channel", "category")
FEATURES = (
    *PRICE_FEATURES,
    "log_reference_price",
    "units_lag1",
    "units_mean4",
    "units_mean13",
    "units_mean_all",
    "sale_share",
    "periods_since_sale",
    "age_periods",
    "channel_trend",
    "doy_sin",
    "doy_cos",
    "week_of_year",
    "day_of_week",
    *CATEGORICAL_FEATURES,
)
MIN_RATIO = 1e-3  # price ratios are floored here before the log (a price of 0 stays finite)
DAYS_PER_YEAR = 365.25
DEFAULT_PARAMS = {
    "objective": "poisson",
    "n_estimators": 300,  # a cap: with a validation set, early stopping picks the rounds
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 20,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "reg_lambda": 1.0,
    "monotone_constraints_method": "advanced",
    "random_state": 0,
    "deterministic": True,
    "force_row_wise": True,
    "n_jobs": 1,
    "verbose": -1,
}
EARLY_STOPPING_ROUNDS = 50


def _check_period(period: Period) -> pd.Timedelta:
    if period not in PERIOD_LENGTHS:
        raise ValueError(f"period must be one of {sorted(PERIOD_LENGTHS)}, got {period!r}")
    return PERIOD_LENGTHS[period]


def period_start(ts: pd.Series, period: Period) -> pd.Series:
    """The UTC start of the period holding each timestamp (weeks start on Monday)."""
    _check_period(period)
    day = pd.to_datetime(ts, utc=True).dt.floor("D")
    if period == "W":
        day = day - pd.to_timedelta(day.dt.dayofweek, unit="D")
    return day


def _series_grid(first: pd.DataFrame, last: pd.Timestamp, step: pd.Timedelta) -> pd.DataFrame:
    """Every period of each series from its first period to `last`."""
    counts = ((last - first["period_start"]) // step + 1).clip(lower=0).to_numpy(dtype=np.int64)
    series = np.repeat(np.arange(len(first)), counts)
    offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    origin = first["period_start"].dt.tz_convert(None).to_numpy()
    starts = origin[series] + offset * step.to_timedelta64()
    return pd.DataFrame({
        "item_id": first["item_id"].to_numpy()[series],
        "channel": first["channel"].to_numpy()[series],
        "period_start": pd.to_datetime(starts).tz_localize("UTC"),
    })


def build_panel(
    events: pd.DataFrame, period: Period = "W", end=None, catalog: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The item x channel x period panel of `events` (canonical) with its feature columns.

    `end` (exclusive, UTC) defaults to the midnight after the last event; events from `end` on
    are ignored and only periods that end by `end` are kept. `catalog` adds item categories.
    Rows are sorted by item, channel and period.
    """
    step = _check_period(period)
    ts = pd.to_datetime(events["ts"], utc=True)
    if end is None:
        end = ts.max().floor("D") + pd.Timedelta(days=1) if len(ts) else pd.Timestamp(0, tz="UTC")
    end = to_utc(end)
    frame = pd.DataFrame({
        "event_type": events["event_type"].to_numpy(),
        "item_id": events["item_id"].to_numpy(),
        "channel": events["channel"].to_numpy(),
        "ts": ts.to_numpy(),
        "quantity": events["quantity"].to_numpy(dtype=float),
        "unit_price": events["unit_price"].to_numpy(dtype=float),
    })
    frame = frame[frame["ts"] < end]
    frame["period_start"] = period_start(frame["ts"], period)
    keys = [*SERIES_KEYS, "period_start"]

    purchases = frame[frame["event_type"] == "purchase"]
    sales = (
        purchases.assign(revenue=purchases["quantity"] * purchases["unit_price"])
        .groupby(keys, sort=False)[["quantity", "revenue"]].sum()
        .reset_index()
    )
    sales["sales_price"] = sales["revenue"] / sales["quantity"]
    shown = frame[(frame["event_type"] != "return") & frame["unit_price"].notna()]
    seen = (
        shown.sort_values("ts", kind="stable").groupby(keys, sort=False)["unit_price"].last()
        .rename("seen_price").reset_index()
    )
    first = sales.groupby(SERIES_KEYS, sort=False)["period_start"].min().reset_index()
    last = period_start(pd.Series([end]), period).iloc[0] - step
    panel = _series_grid(first, last, step)
    panel = panel.merge(sales[[*keys, "quantity", "sales_price"]], on=keys, how="left")
    panel = panel.merge(seen, on=keys, how="left")
    panel = panel.sort_values(keys, kind="stable").reset_index(drop=True)

    panel["units"] = panel.pop("quantity").fillna(0.0)
    sold = panel["units"] > 0
    observed = panel["sales_price"].where(sold, panel["seen_price"])
    panel["price_source"] = np.where(sold, "sales", np.where(observed.notna(), "events", "carried"))
    series = panel.groupby(SERIES_KEYS, sort=False).ngroup().to_numpy()
    panel["price"] = observed.groupby(series).ffill()
    panel = panel.drop(columns=["sales_price", "seen_price"])
    if catalog is not None:
        categories = catalog.drop_duplicates("item_id").set_index("item_id")["category"]
        panel["category"] = panel["item_id"].map(categories)
    else:
        panel["category"] = None
    return _add_features(panel, observed, series, period)


def _past_mean(values: np.ndarray, position: np.ndarray, window: int | None) -> np.ndarray:
    """Mean of `values` over the previous `window` rows of the same series (all previous rows
    when None); NaN on a series' first row. Rows must be contiguous per series, in time order."""
    total = np.concatenate([[0.0], np.cumsum(values)])
    index = np.arange(len(values))
    count = position if window is None else np.minimum(position, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (total[index] - total[index - count]) / count, np.nan)


def _channel_trend(panel: pd.DataFrame) -> np.ndarray:
    """Per row, log((mean channel units of the previous 4 periods + 1) / (of the previous 13
    periods + 1)): the channel's recent momentum."""
    totals = panel.groupby(["channel", "period_start"])["units"].sum().unstack(0).sort_index()
    shifted = totals.shift(1)
    recent = shifted.rolling(4, min_periods=1).mean()
    longer = shifted.rolling(13, min_periods=1).mean()
    trend = np.log((recent + 1.0) / (longer + 1.0)).stack().rename("channel_trend")
    key = pd.MultiIndex.from_arrays([panel["period_start"], panel["channel"]])
    return trend.reindex(key).to_numpy()


def _add_features(
    panel: pd.DataFrame, observed: pd.Series, series: np.ndarray, period: Period
) -> pd.DataFrame:
    step = PERIOD_LENGTHS[period]
    position = panel.groupby(series).cumcount().to_numpy()
    units = panel["units"].to_numpy(dtype=float)

    median_so_far = observed.groupby(series).expanding().median().reset_index(level=0, drop=True)
    reference = median_so_far.sort_index().groupby(series).shift(1)
    panel["reference_price"] = reference.fillna(panel["price"]).to_numpy()
    panel = with_price(panel, panel["price"].to_numpy(dtype=float))

    panel["units_lag1"] = _past_mean(units, position, 1)
    panel["units_mean4"] = _past_mean(units, position, 4)
    panel["units_mean13"] = _past_mean(units, position, 13)
    panel["units_mean_all"] = _past_mean(units, position, None)
    panel["sale_share"] = _past_mean((units > 0).astype(float), position, None)
    index = np.arange(len(panel), dtype=float)
    last_sale = pd.Series(np.where(units > 0, index, np.nan)).groupby(series).shift(1)
    last_sale = last_sale.groupby(series).ffill().to_numpy()
    panel["periods_since_sale"] = index - last_sale
    panel["age_periods"] = position
    panel["channel_trend"] = _channel_trend(panel) if len(panel) else np.nan

    middle = panel["period_start"] + step / 2
    angle = 2 * np.pi * (middle.dt.dayofyear - 1) / DAYS_PER_YEAR
    panel["doy_sin"] = np.sin(angle)
    panel["doy_cos"] = np.cos(angle)
    panel["week_of_year"] = middle.dt.isocalendar().week.to_numpy(dtype=float)
    panel["day_of_week"] = panel["period_start"].dt.dayofweek.astype(float)
    return panel


def with_price(rows: pd.DataFrame, price: np.ndarray) -> pd.DataFrame:
    """A copy of panel `rows` priced at `price`: the price features recomputed from the row's
    `reference_price`, everything else as is."""
    price = np.asarray(price, dtype=float)
    ratio = _price_ratio(price, rows["reference_price"].to_numpy(dtype=float))
    return rows.assign(
        price=price,
        price_ratio=ratio,
        log_price_ratio=np.log(ratio),
        log_reference_price=np.log(rows["reference_price"].to_numpy(dtype=float)),
    )


def _price_ratio(price: np.ndarray, reference: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(reference > 0, price / reference, np.nan)
    return np.maximum(ratio, MIN_RATIO)


def naive_forecasts(panel: pd.DataFrame) -> pd.DataFrame:
    """Baselines per panel row: "last_week" (units of the previous period) and "mean_4w" (mean
    units of the previous 4 periods, fewer at the start of a series)."""
    return pd.DataFrame({
        "last_week": panel["units_lag1"].to_numpy(),
        "mean_4w": panel["units_mean4"].to_numpy(),
    }, index=panel.index)


class DemandModel:
    """Poisson LightGBM on the panel features, monotone non-increasing in price."""

    def __init__(self, features: Sequence[str] = FEATURES, **params):
        self.features = list(features)
        self.params = {**DEFAULT_PARAMS, **params}
        self.model: lgb.LGBMRegressor | None = None
        self.codes: dict[str, dict[str, int]] = {}
        self.best_iteration: int | None = None

    def _matrix(self, panel: pd.DataFrame) -> pd.DataFrame:
        columns = {}
        for name in self.features:
            if name in CATEGORICAL_FEATURES:
                columns[name] = panel[name].map(self.codes[name]).to_numpy(dtype=float)
            else:
                columns[name] = panel[name].to_numpy(dtype=float)
        return pd.DataFrame(columns, columns=self.features)

    def fit(self, panel_train: pd.DataFrame, panel_valid: pd.DataFrame | None = None):
        """Fit on panel rows (a series' first period is skipped); with `panel_valid`, stop
        early on its Poisson deviance. Returns self."""
        train = panel_train[panel_train["age_periods"] > 0]
        if train.empty:
            raise InputError("no training rows: every series needs a period after its first")
        self.codes = {
            name: {value: code for code, value in enumerate(sorted(train[name].dropna().unique()))}
            for name in CATEGORICAL_FEATURES if name in self.features
        }
        constraints = [-1 if name in PRICE_FEATURES else 0 for name in self.features]
        categorical = [i for i, name in enumerate(self.features) if name in CATEGORICAL_FEATURES]
        self.model = lgb.LGBMRegressor(monotone_constraints=constraints, **self.params)
        fit_args: dict[str, Any] = {"categorical_feature": categorical}
        if panel_valid is not None:
            valid = panel_valid[panel_valid["age_periods"] > 0]
            fit_args["eval_X"] = (self._matrix(valid),)
            fit_args["eval_y"] = (valid["units"].to_numpy(dtype=float),)
            fit_args["callbacks"] = [lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)]
        self.model.fit(self._matrix(train), train["units"].to_numpy(dtype=float), **fit_args)
        self.best_iteration = self.model.best_iteration_ or self.model.n_estimators_
        return self

    @property
    def fitted_rounds(self) -> int:
        """The boosting rounds predictions use (the early-stopping round when validated)."""
        if self.best_iteration is None:
            raise RuntimeError("the demand model is not fitted")
        return self.best_iteration

    @property
    def booster(self) -> lgb.Booster:
        """The fitted native booster."""
        if self.model is None:
            raise RuntimeError("the demand model is not fitted")
        return self.model.booster_

    def _raw(self, matrix: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.booster.predict(matrix, num_iteration=self.best_iteration))

    def predict(self, panel: pd.DataFrame) -> np.ndarray:
        """Expected units of each panel row at its own price."""
        return self._raw(self._matrix(panel))

    def predict_at_prices(self, rows: pd.DataFrame, prices) -> np.ndarray:
        """Expected units of each row (features as of its decision time) at other prices.

        `prices`: a scalar, one price per row, or a (rows, k) array of k prices per row; the
        result has the shape of the prices broadcast to the rows.
        """
        prices = np.asarray(prices, dtype=float)
        if prices.ndim == 0:
            prices = np.full(len(rows), float(prices))
        if prices.shape[0] != len(rows) or prices.ndim > 2:
            raise ValueError("prices must be a scalar, one price per row or a (rows, k) array")
        per_row = 1 if prices.ndim == 1 else prices.shape[1]
        matrix = self._matrix(rows)
        if per_row > 1:
            matrix = pd.DataFrame(np.repeat(matrix.to_numpy(), per_row, axis=0),
                                  columns=self.features)
        reference = np.repeat(rows["reference_price"].to_numpy(dtype=float), per_row)
        ratio = _price_ratio(prices.ravel(), reference)
        for name, values in (("price_ratio", ratio), ("log_price_ratio", np.log(ratio))):
            if name in self.features:
                matrix[name] = values
        return self._raw(matrix).reshape(prices.shape)

    def feature_importance(self) -> pd.DataFrame:
        """Gain and split count of each feature, by gain descending."""
        booster = self.booster
        return pd.DataFrame({
            "feature": self.features,
            "gain": booster.feature_importance("gain", iteration=self.best_iteration),
            "splits": booster.feature_importance("split", iteration=self.best_iteration),
        }).sort_values("gain", ascending=False, ignore_index=True)


PRICE_SMOOTHING = 0.05  # demand_function averages the model over prices within +-5%
SMOOTHING_POINTS = 11


def pricing_params(features=FEATURES) -> dict:
    """LightGBM parameters of the pricing demand model: the price features may interact with
    the channel only (the other features with each other), so the log price response is shared
    by the items of a channel; item-level responses learnt from a year of sparse sales were
    mostly noise (docs/experiments.md)."""
    features = list(features)
    price_group = [features.index(name) for name in (*PRICE_FEATURES, "channel")
                   if name in features]
    other_group = [i for i, name in enumerate(features) if name not in PRICE_FEATURES]
    return {"interaction_constraints": [price_group, other_group]}


def demand_function(model: DemandModel, smoothing: float = PRICE_SMOOTHING) -> ExpectedUnits:
    """The optimizer's `expected_units(rows, prices)` (units per period) from a demand model:
    its prediction averaged over prices within +-`smoothing` (relative) of each price, which
    turns the trees' steps into ramps (still non-increasing in price); 0: the model as is."""
    offsets = np.linspace(-smoothing, smoothing, SMOOTHING_POINTS) if smoothing > 0 else [0.0]

    def expected_units(rows: pd.DataFrame, prices: np.ndarray) -> np.ndarray:
        prices = np.asarray(prices, dtype=float)
        units = np.mean([model.predict_at_prices(rows, prices * (1 + offset))
                         for offset in offsets], axis=0)
        return np.maximum(units, 0.0)

    return expected_units
