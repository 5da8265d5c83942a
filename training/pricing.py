"""Price suggestions end to end: market files -> offers -> demand model -> optimizer -> store.

Offers (`build_offers`). One row per item x channel with a purchase before `as_of`: the
optimizer's `OFFER_COLUMNS` (unit cost and price bounds from the catalog, fees from the
channels file, the latest price shown before `as_of` as the current price, the range of
purchase prices as the observed range), the item's category, and the demand model's feature
row of the decision period (the period holding `as_of`; the one starting at `as_of` when it
falls on a period start), built by `models.demand.build_panel` from the events before `as_of`.
Those features look at earlier periods only; the price features are set per candidate price.

Model (`fit_demand`). A `DemandModel` on the panel of the events before `as_of`, early-stopped
on its last `valid_periods` complete periods (the validation window), where it is scored beside
the naive baselines. Two pricing choices on top of `models.demand`:
- the price features may interact with the channel only (LightGBM interaction constraints):
  the log price response is shared by the items of a channel. A year of ~2 sales a week per
  item x channel cannot identify item-level responses (a per-series Poisson fit has a
  standard error of ~1.3 on elasticities spread by ~0.45); learnt anyway, they were mostly
  noise (simulated seeds 1-3: 0.954/0.957/0.969 of the oracle's profit without the
  constraint, 0.959/0.966/0.968 with it, before smoothing);
- `demand_function` averages the model over prices within +-`PRICE_SMOOTHING` of each price:
  trees respond to price in steps, and an argmax over steps lands just below an edge wherever
  the split happened to fall.

Training (`train_pricing`). The model scored on the validation window is the one logged,
registered and used (it is not refitted on the window): the champion gate then compares
challenger and champion on rows neither trained on, when both come from the same log or from
a log that only grew. Both still read the latest periods through their lag features.

Registry. The native LightGBM booster is registered as `demand-model` (MLflow loads it without
trusting a pickled sklearn wrapper). Predicting also needs the feature list, the categorical
codes, the boosting rounds and the period: they are logged beside it as the run artifact
`demand_model.json`, and `load_demand_model` rebuilds a `DemandModel` from both. The
`champion` alias moves only when the challenger's validation WAPE is lower than the
champion's on the same validation rows; runs are tagged `promoted` and `promotion_reason`.

Suggesting (`run_suggest`). Trains, then prices with the champion (the new model when it was
promoted) and stores the batch as pending suggestions in the service database.

Evaluation (`evaluate_pricing`). On a simulated market only: the model trains on the events,
and the ground truth, read by the evaluation alone after the suggestions are made, scores the
expected profit of the first day after the history for the suggestions, the current prices,
the model's unconstrained `naive_argmax` and the oracle (the optimizer on the true demand under
the same guardrails: the best any demand model can reach under them).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from features.event_log import EventLog
from features.ingest import read_table_file
from features.schemas import InvalidRecordsError, validate_catalog
from features.settings import Settings
from features.simulator import expected_daily_units
from models import registry, suggestions
from models.demand import (
    FEATURES,
    PERIOD_LENGTHS,
    PRICE_FEATURES,
    DemandModel,
    build_panel,
    naive_forecasts,
    period_start,
    with_price,
)
from models.guardrails import Guardrails, load_guardrails
from models.optimizer import (
    OFFER_COLUMNS,
    ExpectedUnits,
    OptimizationResult,
    naive_argmax,
    optimize_prices,
)
from training.demand_evaluation import mae, wape

MODEL_NAME = "demand-model"
EXPERIMENT = "demand-model"
GATING_METRIC = "wape"
METADATA_ARTIFACT = "demand_model.json"
DEFAULT_VALID_PERIODS = 8
MAX_ROUNDS = 1000  # boosting rounds allowed before early stopping
CHANNEL_COLUMNS = ("channel", "fee_percent", "fee_fixed")
CURVE_RATIOS = np.linspace(0.5, 2.0, 61)
CURVE_SAMPLES = 6
PRICE_SMOOTHING = 0.05  # demand_function averages the model over prices within +-5%
SMOOTHING_POINTS = 11
CHECK_SLACK = 1e-6  # absolute slack of the independent guardrail checks (float rounding)
SERIES_KEYS = ["item_id", "channel"]


# ------------------------------------------------------------------------------ market files


def _read(path: Path, what: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    return read_table_file(path)


def _numbers(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    values = pd.to_numeric(frame[column].replace("", np.nan), errors="coerce")
    bad = frame.index[values.isna() | ~np.isfinite(values)].tolist()
    if bad:
        raise ValueError(f"{path}: column '{column}' needs a finite number on every row "
                         f"(row(s) {', '.join(map(str, bad[:5]))})")
    return values.astype(float)


def read_channels(path: Path) -> pd.DataFrame:
    """The channels file (`channel`, `fee_percent`, `fee_fixed`), checked."""
    path = Path(path)
    raw = _read(path, "channels")
    missing = [column for column in CHANNEL_COLUMNS if column not in raw.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    channels = pd.DataFrame({"channel": raw["channel"].astype(str).str.strip()})
    if (channels["channel"] == "").any():
        raise ValueError(f"{path}: column 'channel' is empty on some row")
    if channels["channel"].duplicated().any():
        raise ValueError(f"{path}: column 'channel' repeats "
                         f"{sorted(set(channels['channel'][channels['channel'].duplicated()]))}")
    channels["fee_percent"] = _numbers(raw, "fee_percent", path)
    channels["fee_fixed"] = _numbers(raw, "fee_fixed", path)
    if ((channels["fee_percent"] < 0) | (channels["fee_percent"] >= 100)).any():
        raise ValueError(f"{path}: column 'fee_percent' must be in [0, 100)")
    if (channels["fee_fixed"] < 0).any():
        raise ValueError(f"{path}: column 'fee_fixed' must be >= 0")
    return channels


def load_market_files(
    events_dir: Path, catalog_file: Path, channels_file: Path
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The event log, the catalog (validated) and the channel fees; errors name the file."""
    events_dir = Path(events_dir)
    if not events_dir.is_dir():
        raise FileNotFoundError(f"events directory not found: {events_dir}")
    events = EventLog(events_dir).read()
    if not (events["event_type"] == "purchase").any():
        raise ValueError(f"{events_dir}: the event log holds no purchase events")
    try:
        catalog = validate_catalog(_read(Path(catalog_file), "catalog"))
    except InvalidRecordsError as error:
        raise ValueError(f"{catalog_file}: {error}") from None
    return events, catalog, read_channels(Path(channels_file))


# ----------------------------------------------------------------------------------- offers


def default_as_of(events: pd.DataFrame) -> pd.Timestamp:
    """The midnight (UTC) after the last event: the end of a complete history."""
    return pd.to_datetime(events["ts"], utc=True).max().floor("D") + pd.Timedelta(days=1)


def _utc(value) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def decision_period(as_of, period: str) -> pd.Timestamp:
    """Start of the period the suggestions are for: the period holding `as_of`."""
    return period_start(pd.Series([_utc(as_of)]), period).iloc[0]


def _named(values, limit: int = 5) -> str:
    values = sorted(map(str, values))
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return ", ".join(values[:limit]) + more


def build_offers(
    events: pd.DataFrame, catalog: pd.DataFrame, channels: pd.DataFrame, as_of,
    period: str = "W",
) -> pd.DataFrame:
    """One offer per item x channel sold before `as_of`, with `OFFER_COLUMNS`, the item's
    `category` and the demand model's features of the decision period, priced at the current
    price (`price` and the price features); sorted by item and channel."""
    as_of = _utc(as_of)
    events = events.assign(ts=pd.to_datetime(events["ts"], utc=True))
    history = events[events["ts"] < as_of]
    purchases = history[history["event_type"] == "purchase"]
    if purchases.empty:
        raise ValueError(f"no purchases before {as_of.isoformat()}: nothing to price")
    observed = (purchases.groupby(SERIES_KEYS)["unit_price"].agg(["min", "max"])
                .rename(columns={"min": "observed_min_price", "max": "observed_max_price"}))
    # Returns carry the price of an earlier purchase, not the price shown now.
    priced = history[history["unit_price"].notna() & (history["event_type"] != "return")]
    latest = (priced.sort_values(["ts", "event_id"], kind="stable")
              .groupby(SERIES_KEYS)["unit_price"].last().rename("current_price"))
    offers = observed.join(latest, how="left").reset_index()

    unknown_items = set(offers["item_id"]) - set(catalog["item_id"])
    if unknown_items:
        raise ValueError(f"events sell item(s) missing from the catalog: {_named(unknown_items)}")
    unknown_channels = set(offers["channel"]) - set(channels["channel"])
    if unknown_channels:
        raise ValueError("events sell on channel(s) missing from the channels file: "
                         f"{_named(unknown_channels)}")
    items = catalog.drop_duplicates("item_id")[
        ["item_id", "category", "unit_cost", "min_price", "max_price"]
    ]
    offers = offers.merge(items, on="item_id", how="left").merge(
        channels[list(CHANNEL_COLUMNS)], on="channel", how="left")

    start = decision_period(as_of, period)
    panel = build_panel(history, period, end=start + PERIOD_LENGTHS[period], catalog=catalog)
    # The decision period's own units and price are partial (or none): not features.
    rows = panel[panel["period_start"] == start].drop(
        columns=["category", "units", "price", "price_source"])
    offers = offers.merge(rows, on=SERIES_KEYS, how="left", validate="one_to_one")
    offers = with_price(offers, offers["current_price"].to_numpy(dtype=float))
    columns = [*OFFER_COLUMNS, "category"]
    offers = offers[columns + [c for c in offers.columns if c not in columns]]
    return offers.sort_values(SERIES_KEYS, ignore_index=True)


# ------------------------------------------------------------------------------ the model


def pricing_params(features=FEATURES) -> dict:
    """LightGBM parameters of the pricing demand model: the price features may interact with
    the channel only (the other features with each other), so the log price response is shared
    by the items of a channel (see the module docstring)."""
    features = list(features)
    price_group = [features.index(name) for name in (*PRICE_FEATURES, "channel")
                   if name in features]
    other_group = [i for i, name in enumerate(features) if name not in PRICE_FEATURES]
    return {"interaction_constraints": [price_group, other_group]}


@dataclass
class FittedDemand:
    """A demand model fitted before its validation window, and its validation scores."""

    model: DemandModel
    panel: pd.DataFrame
    valid: pd.DataFrame  # validation rows (series past their first period)
    valid_start: pd.Timestamp
    metrics: dict[str, dict[str, float]]  # model / last_week / mean_4w -> wape, mae


def score_rows(valid: pd.DataFrame, predicted) -> dict[str, float]:
    """WAPE and MAE of `predicted` against the rows' `units`."""
    actual = valid["units"].to_numpy(dtype=float)
    return {"wape": wape(actual, predicted), "mae": mae(actual, predicted)}


def fit_demand(
    events: pd.DataFrame, catalog: pd.DataFrame | None, period: str = "W", end=None,
    valid_periods: int = DEFAULT_VALID_PERIODS, **params,
) -> FittedDemand:
    """Fit a `DemandModel` on the complete periods before `end` (default: the midnight after
    the last event) but the last `valid_periods` (at most a quarter), which stop it early and
    score it beside the naive baselines. `params` override the model parameters."""
    panel = build_panel(events, period, end=end, catalog=catalog)
    starts = np.sort(panel["period_start"].unique())
    n_valid = min(valid_periods, len(starts) // 4)
    if n_valid < 1:
        raise ValueError(f"too little history to validate: {len(starts)} complete period(s) "
                         f"of '{period}', at least 4 needed")
    valid_start = pd.Timestamp(starts[-n_valid])
    train = panel[panel["period_start"] < valid_start]
    valid = panel[(panel["period_start"] >= valid_start) & (panel["age_periods"] > 0)]
    if valid.empty or not (train["age_periods"] > 0).any():
        raise ValueError("too little history: no training or no validation rows")
    model = DemandModel(**{"n_estimators": MAX_ROUNDS, **pricing_params(), **params})
    model.fit(train, valid)
    baselines = naive_forecasts(valid)
    metrics = {"model": score_rows(valid, model.predict(valid)),
               **{name: score_rows(valid, baselines[name]) for name in baselines.columns}}
    return FittedDemand(model, panel, valid, valid_start, metrics)


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


def suggest_prices(
    events: pd.DataFrame, catalog: pd.DataFrame, channels: pd.DataFrame, guardrails: Guardrails,
    model: DemandModel, model_version: str, as_of=None, period: str = "W",
) -> OptimizationResult:
    """Price suggestions for every offer sold before `as_of` (default: the end of the log),
    from a demand model trained on `period` panels."""
    as_of = default_as_of(events) if as_of is None else as_of
    offers = build_offers(events, catalog, channels, as_of, period)
    return optimize_prices(offers, demand_function(model), guardrails, model_version)


# -------------------------------------------------------------------- training and registry


class BoosterDemandModel(DemandModel):
    """A `DemandModel` around a registered native LightGBM booster and its metadata."""

    def __init__(self, booster: lgb.Booster, metadata: Mapping):
        super().__init__(metadata["features"], **metadata["params"])
        self.booster = booster
        self.codes = {name: dict(codes) for name, codes in metadata["codes"].items()}
        self.best_iteration = int(metadata["best_iteration"])

    def _raw(self, matrix: pd.DataFrame) -> np.ndarray:
        return self.booster.predict(matrix, num_iteration=self.best_iteration)

    def feature_importance(self) -> pd.DataFrame:
        return pd.DataFrame({
            "feature": self.features,
            "gain": self.booster.feature_importance("gain", iteration=self.best_iteration),
            "splits": self.booster.feature_importance("split", iteration=self.best_iteration),
        }).sort_values("gain", ascending=False, ignore_index=True)


@dataclass(frozen=True)
class RegisteredDemand:
    """A registered demand model version, ready to predict."""

    model: DemandModel
    version: str
    model_version: str  # "demand-model:<version>", stored with every suggestion
    period: str
    metadata: dict


def model_version_label(version: str) -> str:
    return f"{MODEL_NAME}:{version}"


def _metadata(fitted: FittedDemand, period: str, as_of: pd.Timestamp) -> dict:
    model = fitted.model
    return {
        "format": 1,
        "period": period,
        "features": model.features,
        "params": model.params,
        "codes": model.codes,
        "best_iteration": int(model.best_iteration),
        "as_of": as_of.isoformat(),
        "valid_start": fitted.valid_start.isoformat(),
        "smoothing": PRICE_SMOOTHING,
    }


def load_demand_model(settings: Settings, version: str | None = None) -> RegisteredDemand:
    """A registered `demand-model` version (default: the champion) with its metadata;
    LookupError when there is none."""
    registry.configure(settings)
    if version is None:
        found = registry.champion(MODEL_NAME)
        if found is None:
            raise LookupError(f"no '{registry.CHAMPION}' version of {MODEL_NAME} is registered")
    else:
        try:
            found = MlflowClient().get_model_version(MODEL_NAME, str(version))
        except MlflowException:
            raise LookupError(f"{MODEL_NAME} has no version {version}") from None
    booster = mlflow.lightgbm.load_model(f"models:/{MODEL_NAME}/{found.version}")
    metadata = mlflow.artifacts.load_dict(f"runs:/{found.run_id}/{METADATA_ARTIFACT}")
    return RegisteredDemand(BoosterDemandModel(booster, metadata), str(found.version),
                            model_version_label(str(found.version)), metadata["period"],
                            metadata)


@dataclass
class PricingReport:
    """What one `train_pricing` run measured and decided, and the model it trained."""

    run_id: str
    version: str
    model_version: str
    metrics: dict[str, dict[str, float]]
    champion_version: str | None
    champion_score: float | None
    promoted: bool
    reason: str
    model: DemandModel
    period: str
    as_of: pd.Timestamp
    valid_start: pd.Timestamp


def _champion_score(settings: Settings, fitted: FittedDemand, period: str):
    """(champion version, its validation WAPE on the same rows, why it is not comparable)."""
    if registry.champion(MODEL_NAME) is None:
        return None, None, None
    champion = load_demand_model(settings)
    if champion.period != period:
        return champion.version, None, (
            f"champion v{champion.version} predicts '{champion.period}' periods, not "
            f"'{period}': not comparable, the challenger replaces it")
    predicted = champion.model.predict(fitted.valid)
    return champion.version, score_rows(fitted.valid, predicted)[GATING_METRIC], None


def price_response_figure(model: DemandModel, rows: pd.DataFrame, title: str) -> Figure:
    """Predicted units vs price / reference price (0.5 to 2.0) of some offers' rows."""
    figure = Figure(figsize=(8, 5), layout="tight")
    axis = figure.subplots()
    reference = rows["reference_price"].to_numpy(dtype=float)
    units = model.predict_at_prices(rows, reference[:, None] * CURVE_RATIOS[None, :])
    for (_, row), curve in zip(rows.iterrows(), units, strict=True):
        axis.plot(CURVE_RATIOS, curve, label=f"{row['item_id']} {row['channel']} "
                                             f"(ref {row['reference_price']:.2f})")
    axis.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
    axis.set_xlabel("price / reference price")
    axis.set_ylabel("predicted units per period")
    axis.set_title(title)
    axis.legend(fontsize=7)
    return figure


def _sample_rows(offers: pd.DataFrame) -> pd.DataFrame:
    """Up to `CURVE_SAMPLES` offers, the best sellers spread over the channels."""
    ranked = offers.sort_values(["units_mean_all", "item_id"], ascending=[False, True])
    ranked = ranked.assign(rank=ranked.groupby("channel").cumcount())
    return ranked.sort_values(["rank", "channel"]).head(CURVE_SAMPLES).drop(columns="rank")


def train_pricing(
    settings: Settings, events: pd.DataFrame, catalog: pd.DataFrame, channels: pd.DataFrame,
    period: str = "W", valid_periods: int = DEFAULT_VALID_PERIODS, as_of=None, **params,
) -> PricingReport:
    """Train the demand model on the events before `as_of` (default: the end of the log),
    score it and the naive baselines on the validation window, log the run to MLflow,
    register `demand-model` and move `champion` only when its validation WAPE is lower."""
    as_of = default_as_of(events) if as_of is None else _utc(as_of)
    fitted = fit_demand(events, catalog, period, as_of, valid_periods, **params)
    offers = build_offers(events, catalog, channels, as_of, period)
    registry.configure(settings)
    champion_version, champion_score, incomparable = _champion_score(settings, fitted, period)
    challenger = fitted.metrics["model"][GATING_METRIC]
    decision = registry.decide_promotion(GATING_METRIC, challenger, champion_score,
                                         higher_is_better=False)
    if incomparable:
        decision = registry.PromotionDecision(True, incomparable)
    model = fitted.model

    registry.use_experiment(EXPERIMENT, settings)
    with mlflow.start_run() as run:
        mlflow.log_params({
            **model.params,
            "best_iteration": model.best_iteration, "period": period,
            "valid_periods": valid_periods, "as_of": as_of.isoformat(),
            "valid_start": fitted.valid_start.isoformat(), "features": ",".join(model.features),
            "price_smoothing": PRICE_SMOOTHING,
        })
        for name, values in fitted.metrics.items():
            mlflow.log_metrics({f"{name}_{metric}": value for metric, value in values.items()})
        mlflow.log_metrics({
            "train_rows": int((fitted.panel["period_start"] < fitted.valid_start).sum()),
            "validation_rows": len(fitted.valid),
            "validation_units": float(fitted.valid["units"].sum()),
            "offers": len(offers),
        })
        if champion_score is not None:
            mlflow.log_metric(f"champion_{GATING_METRIC}", champion_score)
        mlflow.log_figure(price_response_figure(model, _sample_rows(offers),
                                                f"{MODEL_NAME}: price response ({period})"),
                          "price_response.png")
        mlflow.log_dict(_metadata(fitted, period, as_of), METADATA_ARTIFACT)
        # The native booster: LightGBM's own format, no pickled sklearn wrapper to trust.
        info = mlflow.lightgbm.log_model(model.model.booster_, name="model",
                                         registered_model_name=MODEL_NAME)
        version = str(info.registered_model_version)
        mlflow.set_tags({"promoted": str(decision.promote).lower(),
                         "promotion_reason": decision.reason,
                         "champion_version": champion_version or ""})
    if decision.promote:
        registry.promote(MODEL_NAME, version)
    return PricingReport(run.info.run_id, version, model_version_label(version), fitted.metrics,
                         champion_version, champion_score, decision.promote, decision.reason,
                         model, period, as_of, fitted.valid_start)


def run_suggest(
    settings: Settings, events_dir: Path, catalog_file: Path, channels_file: Path,
    guardrails_file: Path | None = None, period: str = "W", as_of=None,
) -> tuple[str, OptimizationResult]:
    """Train (`train_pricing`), suggest prices with the champion (the new model when it was
    promoted) and store them as a pending batch in `settings.database`; returns the batch id
    and the optimizer's result. Without `guardrails_file`, the default guardrails apply."""
    events, catalog, channels = load_market_files(events_dir, catalog_file, channels_file)
    guardrails = load_guardrails(guardrails_file) if guardrails_file else Guardrails()
    report = train_pricing(settings, events, catalog, channels, period, as_of=as_of)
    if report.promoted:
        model, model_version, model_period = report.model, report.model_version, period
    else:
        champion = load_demand_model(settings)
        model, model_version, model_period = (champion.model, champion.model_version,
                                              champion.period)
    result = suggest_prices(events, catalog, channels, guardrails, model, model_version,
                            report.as_of, model_period)
    categories = dict(zip(catalog["item_id"], catalog["category"], strict=True))
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = suggestions.engine_for(settings.database)
    try:
        suggestions.create_schema(engine)
        batch_id = suggestions.save_batch(engine, result.suggestions, result.skipped,
                                          model_version, guardrails.model_dump(mode="json"),
                                          categories)
    finally:
        engine.dispose()
    return batch_id, result


# ------------------------------------------------------------------------------ evaluation


def guardrail_violations(
    offers: pd.DataFrame, prices: pd.DataFrame, guardrails: Guardrails
) -> dict[str, int]:
    """Per rule, the rows of `prices` (item_id, channel, suggested_price) that break it, each
    rule re-checked on its own from the offers; "channel_spread" counts items whose suggested
    channel prices spread too far."""
    rows = prices[[*SERIES_KEYS, "suggested_price"]].merge(
        offers, on=SERIES_KEYS, how="left", validate="one_to_one")
    price = rows["suggested_price"].to_numpy(dtype=float)
    current = rows["current_price"].to_numpy(dtype=float)
    floor = guardrails.margin_floor(rows["unit_cost"], rows["fee_percent"], rows["fee_fixed"])
    change = guardrails.max_change_percent / 100
    trust = guardrails.trust_band_percent / 100
    cents = np.round(price * 100)
    on_cents = np.abs(price * 100 - cents) < 1e-6
    if guardrails.price_endings:
        endings = [round(ending * 100) for ending in guardrails.price_endings]
        ending_ok = on_cents & np.isin(cents % 100, endings)
    else:
        step = round(guardrails.price_step * 100)
        ending_ok = (on_cents & (cents % step == 0)) | (np.abs(price - current) < CHECK_SLACK)
    max_price = rows["max_price"].to_numpy(dtype=float)
    checks = {
        "min_margin": price < floor - CHECK_SLACK,
        "min_price": price < rows["min_price"].to_numpy(dtype=float) - CHECK_SLACK,
        "max_price": ~np.isnan(max_price) & (price > max_price + CHECK_SLACK),
        "max_change": np.abs(price - current) > change * current + CHECK_SLACK,
        "trust_band":
            (price < rows["observed_min_price"].to_numpy(dtype=float) * (1 - trust) - CHECK_SLACK)
            | (price > rows["observed_max_price"].to_numpy(dtype=float) * (1 + trust)
               + CHECK_SLACK),
        "price_endings": ~ending_ok,
    }
    counts = {rule: int(np.sum(broken)) for rule, broken in checks.items()}
    by_item = rows.groupby("item_id")["suggested_price"].agg(["min", "max"])
    spread = guardrails.max_channel_spread_percent / 100
    counts["channel_spread"] = int(
        (by_item["max"] > by_item["min"] * (1 + spread) + CHECK_SLACK).sum())
    return counts


def _true_profit(truth_rows: pd.DataFrame, price: np.ndarray, day: int) -> float:
    units = expected_daily_units(truth_rows, price, day)
    margin = (price * (1 - truth_rows["fee_percent"].to_numpy() / 100)
              - truth_rows["fee_fixed"].to_numpy() - truth_rows["unit_cost"].to_numpy())
    return float(np.sum(units * margin))


def _priced(offers: pd.DataFrame, chosen: pd.DataFrame, column: str) -> np.ndarray:
    """Each offer's price in `chosen` (item_id, channel, `column`), else its current price."""
    key = pd.MultiIndex.from_frame(offers[SERIES_KEYS])
    prices = chosen.set_index(SERIES_KEYS)[column].reindex(key).to_numpy(dtype=float)
    return np.where(np.isnan(prices), offers["current_price"].to_numpy(dtype=float), prices)


def read_simulation(sim_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Events, catalog and channels of a simulated market directory (`write_simulation`)."""
    sim_dir = Path(sim_dir)
    return load_market_files(sim_dir / "events", sim_dir / "catalog.csv",
                             sim_dir / "channels.csv")


def _read_truth(sim_dir: Path, offers: pd.DataFrame, as_of: pd.Timestamp):
    """The truth rows of the offers (same order) and the day index of `as_of`."""
    path = Path(sim_dir) / "ground_truth.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"ground truth file not found: {path}")
    truth = pd.read_parquet(path)
    start = _utc(pd.Timestamp(truth["start"].iloc[0]))
    day = int((as_of - start) / pd.Timedelta(days=1))
    truth = truth.drop(columns=["start"]).set_index(SERIES_KEYS)
    rows = truth.reindex(pd.MultiIndex.from_frame(offers[SERIES_KEYS])).reset_index()
    if rows["elasticity"].isna().any():
        raise ValueError(f"{path}: no truth for some offers")
    return rows, day


def evaluate_pricing(
    sim_dir: Path, guardrails: Guardrails | None = None, period: str = "W", **params
) -> dict:
    """Score a simulated market's suggestions with its ground truth.

    The demand model trains on the events (`fit_demand`; the ground truth is read only after
    the suggestions are made) and prices every offer as of the end of the history. Each
    strategy's expected profit on the first day after the history, by the true demand, sums
    over all offers: the suggestions, keeping the current prices, the model's unconstrained
    `naive_argmax`, and the oracle (the optimizer on the true demand, same guardrails).
    Skipped offers keep their current price in every strategy. Fractions divide by the
    oracle's profit; `violations` counts suggestions breaking a rule, re-checked one by one.
    Also returned: each strategy's `<name>_profit`, `violations_by_rule`, the model's
    `validation` scores and `prices` (a DataFrame: every offer's price in each strategy).
    """
    guardrails = guardrails or Guardrails()
    events, catalog, channels = read_simulation(sim_dir)
    as_of = default_as_of(events)
    fitted = fit_demand(events, catalog, period, end=as_of, **params)
    offers = build_offers(events, catalog, channels, as_of, period)
    demand = demand_function(fitted.model)
    result = optimize_prices(offers, demand, guardrails, "evaluation")
    naive = naive_argmax(offers, demand)

    # The ground truth, from here on only.
    truth_rows, day = _read_truth(sim_dir, offers, as_of)
    parameters = ["base_daily_units", "elasticity", "reference_price", "seasonal_amplitude",
                  "seasonal_peak_day"]
    truth_offers = offers[list(OFFER_COLUMNS)].assign(**{
        column: truth_rows[column].to_numpy() for column in parameters})

    def true_units(rows: pd.DataFrame, prices: np.ndarray) -> np.ndarray:
        return expected_daily_units(rows, prices, day)

    oracle = optimize_prices(truth_offers, true_units, guardrails, "oracle")
    strategies = {
        "suggestions": _priced(offers, result.suggestions, "suggested_price"),
        "keep_current": offers["current_price"].to_numpy(dtype=float),
        "naive_argmax": _priced(offers, naive, "price"),
        "oracle": _priced(offers, oracle.suggestions, "suggested_price"),
    }
    profits = {name: _true_profit(truth_rows, prices, day) for name, prices in strategies.items()}
    violations = guardrail_violations(offers, result.suggestions, guardrails)
    return {
        "oracle_fraction": profits["suggestions"] / profits["oracle"],
        "keep_current_fraction": profits["keep_current"] / profits["oracle"],
        "naive_argmax_fraction": profits["naive_argmax"] / profits["oracle"],
        "violations": sum(violations.values()),
        "suggestions": len(result.suggestions),
        "skipped": len(result.skipped),
        **{f"{name}_profit": value for name, value in profits.items()},
        "violations_by_rule": violations,
        "offers": len(offers),
        "oracle_skipped": len(oracle.skipped),
        "day": day,
        "period": period,
        "validation": fitted.metrics,
        "best_iteration": fitted.model.best_iteration,
        "prices": offers[SERIES_KEYS].assign(
            current_price=strategies["keep_current"],
            suggested_price=strategies["suggestions"],
            naive_argmax_price=strategies["naive_argmax"],
            oracle_price=strategies["oracle"],
        ),
    }
