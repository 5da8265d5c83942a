"""`tailor train pricing`: fit the demand model, log it to MLflow with its validation scores
and price-response curves, register `demand-model` and move `champion` only when it is better.

The registered model is refitted on every period, the validation window included, so prices
are read against the latest sales; the model fitted before the window, which the validation
scores describe, is logged beside it (`VALIDATION_MODEL`). The champion is scored on the
challenger's validation window by a model that never saw it: its refit, or its validation
model when the refit's periods ran into the window (retraining on the same or a grown log).
"""

from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from features.settings import Settings
from features.timestamps import to_utc
from models import registry
from models.pricing.artifacts import (
    METADATA_ARTIFACT,
    MODEL_NAME,
    VALIDATION_MODEL,
    IncompatibleDemandModelError,
    demand_metadata,
    load_demand_model,
    model_version_label,
)
from models.pricing.demand import DemandModel, Period
from models.pricing.offers import build_offers, default_as_of
from training.pricing.fit import DEFAULT_VALID_PERIODS, FittedDemand, fit_demand, score_rows
from training.pricing.market import Market

EXPERIMENT = MODEL_NAME
GATING_METRIC = "wape"
CURVE_RATIOS = np.linspace(0.5, 2.0, 61)
CURVE_SAMPLES = 6


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
    period: Period
    as_of: pd.Timestamp
    valid_start: pd.Timestamp


def _champion_score(settings: Settings, fitted: FittedDemand,
                    period: Period) -> registry.ChampionScore | None:
    """The champion's validation WAPE on the challenger's validation rows."""
    registered = registry.champion(MODEL_NAME)
    if registered is None:
        return None
    try:
        champion = load_demand_model(settings, unseen_from=fitted.valid_start)
    except IncompatibleDemandModelError as error:
        return registry.ChampionScore(str(registered.version), None,
                                      f"{error}; the challenger replaces it")
    if champion.period != period:
        return registry.ChampionScore(champion.version, None, (
            f"champion v{champion.version} predicts '{champion.period}' periods, not "
            f"'{period}': not comparable, the challenger replaces it"))
    rows = champion.model.normalized(fitted.panel).loc[fitted.valid.index]
    predicted = champion.model.predict(rows)
    return registry.ChampionScore(champion.version,
                                  score_rows(fitted.valid, predicted)[GATING_METRIC])


def price_response_figure(model: DemandModel, rows: pd.DataFrame, title: str) -> Figure:
    """Predicted units vs price / the price response's reference price (0.5 to 2.0) of some
    offers' rows."""
    figure = Figure(figsize=(8, 5), layout="tight")
    axis = figure.subplots()
    reference = model.price_response.for_rows(rows)["reference_price"].to_numpy(dtype=float)
    units = model.predict_at_prices(rows, reference[:, None] * CURVE_RATIOS[None, :])
    for (_, row), curve, price in zip(rows.iterrows(), units, reference, strict=True):
        axis.plot(CURVE_RATIOS, curve, label=f"{row['item_id']} {row['channel']} "
                                             f"(ref {price:.2f})")
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
    settings: Settings, market: Market, period: Period = "W",
    valid_periods: int = DEFAULT_VALID_PERIODS, as_of=None, **params,
) -> PricingReport:
    """Train the demand model on the events before `as_of` (default: the end of the log),
    score it and the naive baselines on the validation window, log the run to MLflow,
    register `demand-model` and move `champion` only when its validation WAPE is lower."""
    as_of = default_as_of(market.events) if as_of is None else to_utc(as_of)
    fitted = fit_demand(market.events, market.catalog, period, as_of, valid_periods,
                        dask_scheduler=settings.dask_scheduler, **params)
    offers = build_offers(market.events, market.catalog, market.channels, as_of, period,
                          market.channel_prices, fitted.model)
    registry.configure(settings)
    champion = _champion_score(settings, fitted, period)
    challenger = fitted.metrics["model"][GATING_METRIC]
    decision = registry.decide_promotion(GATING_METRIC, challenger, champion,
                                         higher_is_better=False)
    champion_version = champion.version if champion else None
    champion_score = champion.score if champion else None
    model = fitted.model

    with registry.start_run(EXPERIMENT, settings) as run:
        mlflow.log_params({
            **model.params,
            "best_iteration": model.best_iteration, "period": period,
            "valid_periods": valid_periods, "as_of": as_of.isoformat(),
            "valid_start": fitted.valid_start.isoformat(), "features": ",".join(model.features),
            "curvature": model.price_response.curvature,
        })
        for name, values in fitted.metrics.items():
            mlflow.log_metrics({f"{name}_{metric}": value for metric, value in values.items()})
        mlflow.log_metrics({
            "train_rows": int((fitted.panel["period_start"] < fitted.valid_start).sum()),
            "refit_rows": len(fitted.panel),
            "validation_rows": len(fitted.valid),
            "validation_units": float(fitted.valid["units"].sum()),
            "offers": len(offers),
        })
        if champion_score is not None:
            mlflow.log_metric(f"champion_{GATING_METRIC}", champion_score)
        mlflow.log_figure(price_response_figure(model, _sample_rows(offers),
                                                f"{MODEL_NAME}: price response ({period})"),
                          "price_response.png")
        validated = {"uri": registry.log_booster(fitted.validated.booster, VALIDATION_MODEL),
                     "metadata": demand_metadata(fitted.validated, period, as_of,
                                                 fitted.valid_start, fitted.valid_start)}
        mlflow.log_dict(demand_metadata(model, period, as_of, fitted.valid_start, as_of,
                                        validated), METADATA_ARTIFACT)
        # The native booster: LightGBM's own format, no pickled sklearn wrapper to trust.
        version = registry.register_booster(model.booster, "model", MODEL_NAME)
        mlflow.set_tags({"promoted": str(decision.promote).lower(),
                         "promotion_reason": decision.reason,
                         "champion_version": champion_version or ""})
    if decision.promote:
        registry.promote(MODEL_NAME, version)
    return PricingReport(run.info.run_id, version, model_version_label(version), fitted.metrics,
                         champion_version, champion_score, decision.promote, decision.reason,
                         model, period, as_of, fitted.valid_start)
