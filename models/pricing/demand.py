"""The pricing demand model: expected units per item x channel x period at a price.

Panel (`build_panel`). One row per item x channel x period ("D": UTC day, "W": UTC week starting
Monday), for every period from the series' first purchase to the last complete period before
`end`, zero-sale periods included. `units` is the sum of purchase quantities (returns are not
netted). `price` is the quantity-weighted mean `unit_price` of the period's non-return events:
purchases, and the views and carts that carry the price shown, so a price that changed within
the period counts by how long it was shown, not only by the few units sold at it (with sparse
sales, the price of the units sold alone misstates the price a period was exposed to and
biases the price response towards zero); a period without such events carries the last known
price forward (the list price most likely still applied). `price_source` says "sales" for a
period with sales, "events" for one with other events only, else "carried". Returns are never
a price source: they carry the price of an earlier purchase.

Features. Every feature of a period is computed from earlier periods only, except the price
features, which describe the price set for the period itself (the decision being evaluated):
- `reference_price`: median of the series' observed ("sales"/"events") period prices up to the
  previous period (an expanding median, so no future leak); the series' first period, which has
  no history, uses its own price.
- `price`: the period's price (the decision), which only the price response reads, against
  its own fixed reference per series (not a feature of the base level).
- `log_reference_price`: the item x channel's price level (cheap items sell more units).
- `units_lag1`: units of the previous period; `units_mean4` / `units_mean13`: mean units of the
  previous 4 / 13 periods (fewer at the start of a series); `units_mean_all`: mean units of all
  previous periods of the series (the item-level level); `sale_share`: share of previous periods
  with a sale (intermittency); `periods_since_sale`: periods since the last period with a sale.
- `age_periods`: periods since the series' first sale (trend / life-cycle); 0 on the first row.
- `channel_trend`: log ratio of the channel's total units over the previous 4 periods to those
  over the previous 13 (per period; shop-wide momentum).
- `doy_sin`, `doy_cos`: day of year of the period's middle on the unit circle; `week_of_year`:
  ISO week of the period's middle (`SEASON_FEATURES`, used only when the training history
  spans a year: a season is learnt from a whole one, and on a shorter history the trees read
  the days of year they never saw from the edge of those they did); `day_of_week`: of the
  period start (always 0 for weeks).
- `item_id`, `channel` and `category` (from a catalog, when given): categorical codes fitted by
  the model (values unseen in training are missing). The item code lets the trees learn
  item-specific levels.

Model (`DemandModel`). log expected units = the base level, a `lightgbm.LGBMRegressor` with
the Poisson objective on the features above (no price feature), plus the item x channel price
response of `models.pricing.elasticity` (an elasticity per series, partially pooled towards
its category and channel, >= 0 so demand never rises with price). The first period of a series
is left out of training: it has a sale by construction. `demand_curves` gives the optimizer the
expected units with the ends of each offer's confidence interval of the price response.
"""

from collections.abc import Sequence
from statistics import NormalDist
from typing import Literal

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.errors import InputError
from features.timestamps import to_utc
from models.dask_fit import Rows, fit
from models.pricing.elasticity import (
    CURVATURES,
    DAYS_PER_YEAR,
    PriceResponse,
    annual_angle,
    fit_price_response,
    price_ratio,
)
from models.pricing.optimizer import DemandCurves, ExpectedUnits

Period = Literal["W", "D"]
"""A demand period: `W`, weeks starting on Monday (UTC), or `D`, days."""
PERIOD_LENGTHS: dict[str, pd.Timedelta] = {"D": pd.Timedelta(days=1), "W": pd.Timedelta(days=7)}
SERIES_KEYS = ["item_id", "channel"]
CATEGORICAL_FEATURES = ("item_id", "channel", "category")
FEATURES = (  # of the base level; the price enters through the price response
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
SEASON_FEATURES = ("doy_sin", "doy_cos", "week_of_year")
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
    "random_state": 0,
    "deterministic": True,
    "force_row_wise": True,
    "n_jobs": 1,
    "verbose": -1,
}
EARLY_STOPPING_ROUNDS = 50
CROSS_FIT_FOLDS = 3
FIT_ROUNDS = 2  # structural base and price response, fitted in turn
# The base the price response is fitted against: channel, category, season and the channel's
# momentum, nothing of a series' own (no item code, recent demand, price level or age), so it
# cannot absorb a series' price changes; the response's per-series level does the rest.
RESPONSE_BASE_FEATURES = ("channel_trend", "doy_sin", "doy_cos", "week_of_year", "day_of_week",
                          "channel", "category")


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
    sales = purchases.groupby(keys, sort=False)["quantity"].sum().reset_index()
    shown = frame[(frame["event_type"] != "return") & frame["unit_price"].notna()]
    shown_prices = (
        shown.assign(amount=shown["quantity"] * shown["unit_price"])
        .groupby(keys, sort=False)[["quantity", "amount"]].sum()
    )
    shown_prices = (shown_prices["amount"] / shown_prices["quantity"]).rename("shown_price")
    first = sales.groupby(SERIES_KEYS, sort=False)["period_start"].min().reset_index()
    last = period_start(pd.Series([end]), period).iloc[0] - step
    panel = _series_grid(first, last, step)
    panel = panel.merge(sales, on=keys, how="left")
    panel = panel.merge(shown_prices.reset_index(), on=keys, how="left")
    panel = panel.sort_values(keys, kind="stable").reset_index(drop=True)

    panel["units"] = panel.pop("quantity").fillna(0.0)
    observed = panel.pop("shown_price")
    panel["price_source"] = np.where(panel["units"] > 0, "sales",
                                     np.where(observed.notna(), "events", "carried"))
    series = panel.groupby(SERIES_KEYS, sort=False).ngroup().to_numpy()
    panel["price"] = observed.groupby(series).ffill()
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


LEVEL_WINDOWS = {"units_lag1": 1, "units_mean4": 4, "units_mean13": 13, "units_mean_all": None}


def _level_features(units: np.ndarray, position: np.ndarray) -> dict[str, np.ndarray]:
    """The recent-demand features (`LEVEL_WINDOWS`) from per-row units, rows contiguous per
    series in time order, `position` each row's index within its series."""
    return {name: _past_mean(units, position, window) for name, window in LEVEL_WINDOWS.items()}


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

    panel = panel.assign(**_level_features(units, position))
    panel["sale_share"] = _past_mean((units > 0).astype(float), position, None)
    index = np.arange(len(panel), dtype=float)
    last_sale = pd.Series(np.where(units > 0, index, np.nan)).groupby(series).shift(1)
    last_sale = last_sale.groupby(series).ffill().to_numpy()
    panel["periods_since_sale"] = index - last_sale
    panel["age_periods"] = position
    panel["channel_trend"] = _channel_trend(panel) if len(panel) else np.nan

    middle = panel["period_start"] + step / 2
    angle = annual_angle(middle)
    panel["doy_sin"] = np.sin(angle)
    panel["doy_cos"] = np.cos(angle)
    panel["week_of_year"] = middle.dt.isocalendar().week.to_numpy(dtype=float)
    panel["day_of_week"] = panel["period_start"].dt.dayofweek.astype(float)
    return panel


def with_price(rows: pd.DataFrame, price: np.ndarray) -> pd.DataFrame:
    """A copy of panel `rows` priced at `price`, with `log_reference_price` from the row's
    `reference_price`, everything else as is."""
    return rows.assign(
        price=np.asarray(price, dtype=float),
        log_reference_price=np.log(rows["reference_price"].to_numpy(dtype=float)),
    )


def naive_forecasts(panel: pd.DataFrame) -> pd.DataFrame:
    """Baselines per panel row: "last_week" (units of the previous period) and "mean_4w" (mean
    units of the previous 4 periods, fewer at the start of a series)."""
    return pd.DataFrame({
        "last_week": panel["units_lag1"].to_numpy(),
        "mean_4w": panel["units_mean4"].to_numpy(),
    }, index=panel.index)


class DemandModel:
    """Expected units = a base level (LightGBM, Poisson: seasonality, trend, recent demand; no
    price feature) x the pooled price response of `models.pricing.elasticity`.

    `fit` runs `FIT_ROUNDS` rounds: first a structural base level (`RESPONSE_BASE_FEATURES`)
    without a price effect and the price response on its predictions (the curvature chosen
    among `curvatures`); then the structural base again with the response as its offset, and
    the response once more. The base level that predicts is fitted last, with the response as
    its offset and its recent-demand features measured at the reference price.
    """

    def __init__(self, features: Sequence[str] = FEATURES,
                 curvatures: Sequence[float] = CURVATURES, *, dask_scheduler: str | None = None,
                 **params):
        self.features = list(features)
        self.curvatures = tuple(curvatures)
        self.params = {**DEFAULT_PARAMS, **params}
        self.dask_scheduler = dask_scheduler  # the boosters fit on its cluster when set
        self.model: lgb.LGBMRegressor | None = None
        self.codes: dict[str, dict[str, int]] = {}
        self.best_iteration: int | None = None
        self.structural_rounds: int | None = None  # of the structural base (see `fit`)
        self.response: PriceResponse | None = None
        self.intercept = 0.0  # added to the booster's raw score

    def _matrix(self, panel: pd.DataFrame) -> pd.DataFrame:
        columns = {}
        for name in self.features:
            if name in CATEGORICAL_FEATURES:
                columns[name] = panel[name].map(self.codes[name]).to_numpy(dtype=float)
            else:
                columns[name] = panel[name].to_numpy(dtype=float)
        return pd.DataFrame(columns, columns=self.features)

    def _new_booster(self, train: pd.DataFrame, valid: pd.DataFrame | None,
                     response: PriceResponse | None,
                     **params) -> tuple[lgb.LGBMRegressor, float]:
        """A base-level booster fitted with the price effect as its offset, and its intercept
        (an offset turns off LightGBM's start from the mean, so the mean goes in the offset);
        on the Dask cluster of `dask_scheduler` when set (`models.dask_fit`)."""
        categorical = [i for i, name in enumerate(self.features) if name in CATEGORICAL_FEATURES]
        model = lgb.LGBMRegressor(**{**self.params, **params})
        units = train["units"].to_numpy(dtype=float)
        offset = _offset(train, response)
        intercept = float(np.log(max(units.sum(), 1e-9) / np.exp(offset).sum()))
        validation = None if valid is None else Rows(
            self._matrix(valid), valid["units"].to_numpy(dtype=float),
            init_score=intercept + _offset(valid, response))
        return fit(model, Rows(self._matrix(train), units, init_score=intercept + offset),
                   validation, stopping_rounds=EARLY_STOPPING_ROUNDS,
                   scheduler=self.dask_scheduler, categorical_feature=categorical), intercept

    def normalized(self, panel: pd.DataFrame) -> pd.DataFrame:
        """`panel` (whole series histories, rows in time order per series) with its recent-demand
        features recomputed from units at the reference price: each period's units divided by
        the fitted price effect of its own price. A price change then moves the features only
        through demand, so they do not double the price effect the response applies."""
        return _normalized(panel, self.response)

    def _cross_fitted_log_base(self, train: pd.DataFrame,
                               response: PriceResponse | None) -> np.ndarray:
        """Each training row's base level from a booster that did not see its period: the
        periods are dealt into `CROSS_FIT_FOLDS` folds (period number modulo the folds), so the
        base level cannot learn a series' price test from the test's own periods."""
        periods = pd.factorize(train["period_start"], sort=True)[0] % CROSS_FIT_FOLDS
        log_base = np.empty(len(train))
        for fold in range(CROSS_FIT_FOLDS):
            held_out = periods == fold
            if not held_out.any() or held_out.all():
                continue
            booster, intercept = self._new_booster(train[~held_out], None, response,
                                                   n_estimators=self.fitted_rounds)
            log_base[held_out] = intercept + np.asarray(booster.booster_.predict(
                self._matrix(train[held_out]), raw_score=True))
        if (periods == periods[0]).all():  # one period: nothing to hold out
            log_base = self._log_base(train)
        return log_base

    def _fit_base(self, train: pd.DataFrame, valid: pd.DataFrame | None,
                  response: PriceResponse | None) -> None:
        self.model, self.intercept = self._new_booster(train, valid, response)
        self.best_iteration = self.model.best_iteration_ or self.model.n_estimators_

    def fit(self, panel_train: pd.DataFrame, panel_valid: pd.DataFrame | None = None,
            structural_rounds: int | None = None):
        """Fit on panel rows (a series' first period is skipped); with `panel_valid`, the base
        level stops early on its Poisson deviance (without, the structural base runs
        `structural_rounds`, default `n_estimators`). Returns self.

        The price response is fitted `FIT_ROUNDS` times on the cross-fitted base levels
        (`_cross_fitted_log_base`) of a structural base (the features among
        `RESPONSE_BASE_FEATURES`; all of them when there are none), each round's taking the
        previous response as its offset; then the base level with every feature, its
        recent-demand features measured at the reference price."""
        if not (panel_train["age_periods"] > 0).any():
            raise InputError("no training rows: every series needs a period after its first")
        history = pd.concat([panel_train.assign(in_train=True),
                             panel_valid.assign(in_train=False)] if panel_valid is not None
                            else [panel_train.assign(in_train=True)], ignore_index=True)
        history = history.sort_values([*SERIES_KEYS, "period_start"], kind="stable")
        if not _spans_a_year(history["period_start"]):
            self.features = [name for name in self.features if name not in SEASON_FEATURES]
        self.codes = {
            name: {value: code for code, value in enumerate(sorted(
                panel_train.loc[panel_train["age_periods"] > 0, name].dropna().unique()))}
            for name in CATEGORICAL_FEATURES if name in self.features
        }
        rows = history[history["age_periods"] > 0]
        train = rows[rows["in_train"]]
        valid = rows[~rows["in_train"]] if panel_valid is not None else None
        own = [name for name in self.features if name in RESPONSE_BASE_FEATURES]
        structural = DemandModel(own or self.features, self.curvatures,
                                 dask_scheduler=self.dask_scheduler,
                                 **{**self.params, "n_estimators": structural_rounds
                                    or self.params["n_estimators"]})
        structural.codes = {name: codes for name, codes in self.codes.items()
                            if name in structural.features}
        response: PriceResponse | None = None
        for _ in range(FIT_ROUNDS):
            structural._fit_base(train, valid, response)
            log_base = structural._cross_fitted_log_base(train, response)
            curvatures = self.curvatures if response is None else (response.curvature,)
            response = fit_price_response(train.assign(log_base=log_base), curvatures)
        fitted = _normalized(history, response)
        fitted = fitted[fitted["age_periods"] > 0]
        self._fit_base(fitted[fitted["in_train"]],
                       fitted[~fitted["in_train"]] if panel_valid is not None else None, response)
        self.response = response
        self.structural_rounds = structural.fitted_rounds
        return self

    def refitted(self, panel: pd.DataFrame) -> "DemandModel":
        """A model like this one fitted on every row of `panel` without validation, each
        booster running the rounds this one's early stopping chose."""
        model = DemandModel(self.features, self.curvatures, dask_scheduler=self.dask_scheduler,
                            **{**self.params, "n_estimators": self.fitted_rounds})
        return model.fit(panel, structural_rounds=self.structural_rounds)

    @property
    def fitted_rounds(self) -> int:
        """The boosting rounds predictions use (the early-stopping round when validated)."""
        if self.best_iteration is None:
            raise RuntimeError("the demand model is not fitted")
        return self.best_iteration

    @property
    def booster(self) -> lgb.Booster:
        """The fitted native booster of the base level."""
        if self.model is None:
            raise RuntimeError("the demand model is not fitted")
        return self.model.booster_

    @property
    def price_response(self) -> PriceResponse:
        """The fitted price response."""
        if self.response is None:
            raise RuntimeError("the demand model is not fitted")
        return self.response

    def _log_base(self, rows: pd.DataFrame) -> np.ndarray:
        return self.intercept + np.asarray(self.booster.predict(
            self._matrix(rows), raw_score=True, num_iteration=self.best_iteration))

    def predict(self, panel: pd.DataFrame) -> np.ndarray:
        """Expected units of each panel row at its own price; the rows' recent-demand features
        must be the model's (`normalized`)."""
        return np.exp(self._log_base(panel) + _offset(panel, self.price_response))

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
        response = self.price_response
        found = response.for_rows(rows)
        shape = response.shape(found, prices)
        if prices.ndim == 2:
            level = self._log_base(rows)[:, None]
            elasticity = found["elasticity"].to_numpy()[:, None]
        else:
            level = self._log_base(rows)
            elasticity = found["elasticity"].to_numpy()
        return np.exp(level - elasticity * shape)

    def feature_importance(self) -> pd.DataFrame:
        """Gain and split count of each base-level feature, by gain descending."""
        booster = self.booster
        return pd.DataFrame({
            "feature": self.features,
            "gain": booster.feature_importance("gain", iteration=self.best_iteration),
            "splits": booster.feature_importance("split", iteration=self.best_iteration),
        }).sort_values("gain", ascending=False, ignore_index=True)


def _spans_a_year(period_starts: pd.Series) -> bool:
    """Whether the periods cover a year, but for a partial period at either end."""
    starts = np.sort(pd.to_datetime(period_starts.unique(), utc=True))
    if len(starts) < 2:
        return False
    step = np.diff(starts).min()
    covered = starts[-1] + step - starts[0]
    return bool(covered >= pd.Timedelta(days=DAYS_PER_YEAR) - 2 * step)


def _normalized(panel: pd.DataFrame, response: PriceResponse | None) -> pd.DataFrame:
    if response is None or panel.empty:
        return panel
    series = panel.groupby(SERIES_KEYS, sort=False).ngroup().to_numpy()
    position = pd.Series(series).groupby(series).cumcount().to_numpy()
    at_reference = panel["units"].to_numpy(dtype=float) * np.exp(-_offset(panel, response))
    return panel.assign(**_level_features(at_reference, position))


def _offset(rows: pd.DataFrame, response: PriceResponse | None) -> np.ndarray:
    """The price response's log-demand term of each row at its own price (0 without one).
    The response's nuisance terms (level, season, trend) stay inside its own fit: the base
    level fits them itself."""
    if response is None:
        return np.zeros(len(rows))
    found = response.for_rows(rows)
    return -found["elasticity"].to_numpy() * response.shape(found, rows["price"])


def _elasticity_at(found: pd.DataFrame, shift: float) -> np.ndarray:
    """Each row's response elasticity (`PriceResponse.for_rows`) moved `shift` posterior sds
    (kept >= 0)."""
    return np.maximum(found["elasticity"].to_numpy() + shift * found["elasticity_sd"].to_numpy(),
                      0.0)


def _pinned_units(model: DemandModel, shift: float) -> ExpectedUnits:
    """Expected units that equal the model's at each row's current price and respond to a
    price change with the row's elasticity moved `shift` posterior sds."""
    response = model.price_response

    def expected_units(rows: pd.DataFrame, prices: np.ndarray) -> np.ndarray:
        current = rows["current_price"].to_numpy(dtype=float)
        found = response.for_rows(rows)
        move = response.shape(found, prices) - response.shape(found, current)
        return (model.predict_at_prices(rows, current)
                * np.exp(-_elasticity_at(found, shift) * move))

    return expected_units


def demand_curves(model: DemandModel, offers: pd.DataFrame,
                  confidence_percent: float = 90.0) -> DemandCurves:
    """The optimizer's view of `model` on `offers`: expected units, the demand at the ends of
    the two-sided `confidence_percent` interval of each offer's price response (both pinned to
    the expected units at the current price), and each offer's elasticity at its current
    price with that interval and its evidence."""
    z = NormalDist().inv_cdf(0.5 + confidence_percent / 200)
    found = model.price_response.for_rows(offers)
    ratio = price_ratio(offers["current_price"].to_numpy(dtype=float),
                        found["reference_price"].to_numpy(dtype=float))
    at_current = np.exp(model.price_response.curvature * np.log(ratio))
    low, high = _elasticity_at(found, -z), _elasticity_at(found, z)
    evidence = pd.DataFrame({
        "elasticity": found["elasticity"].to_numpy() * at_current,
        "elasticity_low": low * at_current,
        "elasticity_high": high * at_current,
        "evidence_share": found["evidence_share"].to_numpy(),
        "price_levels": found["price_levels"].to_numpy(),
    })
    return DemandCurves(
        expected_units=lambda rows, prices: model.predict_at_prices(rows, prices),
        scenarios=(_pinned_units(model, -z), _pinned_units(model, z)),
        evidence=evidence,
    )
