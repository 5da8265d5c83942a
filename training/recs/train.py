"""`tailor train recs`: train the ranker, compare it with baselines and the champion on the
same validation month, log everything to MLflow and promote it only when it is better."""

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import mlflow
import pandas as pd
from matplotlib.figure import Figure

from features.event_log import EventLog
from features.ingest import read_catalog
from features.settings import Settings
from features.store import feature_store
from features.timestamps import to_utc
from models import registry
from models.recs.artifacts import (
    CANDIDATE_STATE_ARTIFACT,
    CUTOFF_PARAM,
    MODEL_NAME,
    save_candidate_state,
)
from models.recs.candidates import CandidateConfig, fit_sources, purchases_before
from models.recs.ranker import FEATURE_COLUMNS, Ranker, RankerParams
from training.recs.evaluate import (
    baseline_lists,
    fill_with,
    popular_items,
    ranked_lists,
    truth_sets,
)
from training.recs.examples import HORIZON, train_ranker
from training.recs.metrics import evaluate_lists
from training.stages import StageTimer

EXPERIMENT = MODEL_NAME
GATING_METRIC = "ndcg@10"
VALIDATION_MODEL_TAG = "validation_model_uri"
"""Run tag: the model fitted before the validation month (never saw its labels)."""
EVENT_COLUMNS = ("event_type", "user_id", "session_id", "item_id", "ts")
"""What the recommender's training reads of the event log."""


@dataclass(frozen=True)
class TrainReport:
    """What one training run measured and decided."""

    run_id: str
    version: str
    metrics: dict[str, dict[str, float]]
    champion_score: float | None
    promoted: bool
    reason: str


def metric_key(row: str, metric: str) -> str:
    """An MLflow metric name: `ranker_ndcg_at_10`."""
    return f"{row}_{metric.replace('@', '_at_')}"


def _importance_plot(ranker: Ranker, path: Path) -> None:
    top = ranker.feature_importance().head(20)[::-1]
    figure = Figure(figsize=(7, 6), layout="tight")
    axis = figure.subplots()
    axis.barh(top.index, top.to_numpy())
    axis.set_xlabel("share of gain (mean of ranker and classifier)")
    axis.set_title("recs-ranker: feature importance")
    figure.savefig(path, dpi=100)


def _champion_model_uri(current: registry.RegisteredVersion,
                        validation_cutoff: pd.Timestamp) -> str:
    """The champion's final model, unless its refit saw labels after `validation_cutoff`
    (its data ran past it, e.g. retraining on the same log): then its pre-refit model,
    which stopped where its own validation month began."""
    params, tags = registry.run_data(current.run_id)
    until, probe = params.get(CUTOFF_PARAM), tags.get(VALIDATION_MODEL_TAG)
    if until and probe and to_utc(until) > validation_cutoff:
        return probe
    return registry.version_uri(MODEL_NAME, current.version)


def _champion_score(frame: pd.DataFrame, cutoff: pd.Timestamp,
                    lists_for: Callable[[pd.DataFrame], dict[str, list[str]]],
                    truth: dict[str, set[str]],
                    catalog_size: int) -> registry.ChampionScore | None:
    """The champion's NDCG@10 on the challenger's validation frame."""
    current = registry.champion(MODEL_NAME)
    if current is None:
        return None
    model = registry.load_booster(_champion_model_uri(current, cutoff))
    if model.feature_name() != list(FEATURE_COLUMNS):
        return registry.ChampionScore(current.version, None, (
            f"champion v{current.version} was trained on other features: not comparable, "
            "the challenger replaces it"))
    scored = frame.assign(score=model.predict(frame[list(FEATURE_COLUMNS)]))
    score = evaluate_lists(lists_for(scored), truth, catalog_size)[GATING_METRIC]
    return registry.ChampionScore(current.version, score)


def stage_labels(cutoffs: int) -> list[str]:
    """What `train_recs` does, in order: one label per call of its `on_stage`."""
    steps = ("fitting candidate sources", "generating candidates", "point-in-time features")
    return ["reading the event log",
            *(f"cutoff {k}/{cutoffs}: {step}" for k in range(1, cutoffs + 1) for step in steps),
            "fitting the ranker", "validating against the baselines and the champion",
            "fitting the serving candidate state", "logging to MLflow"]


def train_recs(settings: Settings, params: RankerParams | None = None,
               cutoffs: int = 3, on_stage: Callable[[], None] = lambda: None) -> TrainReport:
    """Train on the whole event log (features must be built and applied), validate on its
    last month, log to MLflow, register `recs-ranker` and move `champion` if better.

    Each stage's seconds and peak resident memory are logged as `stage_*` metrics;
    `on_stage` is called after each stage (`stage_labels`)."""
    registry.configure(settings)
    timer = StageTimer(on_stage)
    with timer.stage("read"):
        events = EventLog(settings.events_dir).read(columns=EVENT_COLUMNS)
        catalog = read_catalog(settings.catalog_path)
    until = events["ts"].max().ceil("D")
    store = feature_store(settings)
    if settings.dask_scheduler:
        params = replace(params or RankerParams(), dask_scheduler=settings.dask_scheduler)
    ranker, examples = train_ranker(events, catalog, store, until, cutoffs, params, timer)
    valid = examples[-1]
    del examples  # the earlier cutoffs' frames are done with
    with timer.stage("evaluation"):
        users = sorted(valid.frame["user_id"].unique())
        history = purchases_before(events, valid.cutoff)
        truth = truth_sets(events, valid.cutoff, valid.cutoff + HORIZON, history)
        catalog_size = history["item_id"].nunique()
        popular = popular_items(history, valid.cutoff)

        def lists_for(scored: pd.DataFrame) -> dict[str, list[str]]:
            return fill_with(ranked_lists(scored, "score"), popular, users)

        challenger = valid.frame.assign(score=ranker.validation_score(valid.frame))
        metrics = {"ranker": evaluate_lists(lists_for(challenger), truth, catalog_size)}
        baselines = baseline_lists(events, valid.cutoff, users, valid.sources["als"], popular)
        for name, lists in baselines.items():
            metrics[name] = evaluate_lists(lists, truth, catalog_size)
        candidate_recall = valid.frame["label"].sum() / max(sum(map(len, truth.values())), 1)
        champion = _champion_score(valid.frame, valid.cutoff, lists_for, truth, catalog_size)
        champion_score = champion.score if champion else None
        decision = registry.decide_promotion(GATING_METRIC, metrics["ranker"][GATING_METRIC],
                                             champion)
    with timer.stage("serving_state"):
        state_sources = fit_sources(purchases_before(events, until), until)

    with (registry.start_run(EXPERIMENT, settings) as run,
          tempfile.TemporaryDirectory() as workdir, timer.stage("logging")):
        mlflow.log_params({**ranker.params.as_lightgbm(), "best_iteration": ranker.best_iteration,
                           "classifier_best_iteration": ranker.classifier_best_iteration,
                           "blend_weight": ranker.blend_weight,
                           "cutoffs": cutoffs, CUTOFF_PARAM: until.isoformat(),
                           "validation_cutoff": valid.cutoff.isoformat(),
                           **{f"candidates_{k}": v for k, v in CandidateConfig().__dict__.items()}})
        for row, values in metrics.items():
            mlflow.log_metrics({metric_key(row, m): v for m, v in values.items() if m != "users"})
        mlflow.log_metrics({"candidate_recall": candidate_recall,
                            "validation_users": len(truth)})
        if champion_score is not None:
            mlflow.log_metric("champion_ndcg_at_10", champion_score)
        plot = Path(workdir) / "feature_importance.png"
        _importance_plot(ranker, plot)
        mlflow.log_artifact(str(plot))
        state = Path(workdir) / CANDIDATE_STATE_ARTIFACT
        save_candidate_state(state_sources, state)
        mlflow.log_artifact(str(state))
        version = registry.register_booster(ranker.model, "model", MODEL_NAME)
        probe = registry.log_booster(ranker.validation_model, "validation_model")
        mlflow.set_tags({"promoted": str(decision.promote).lower(),
                         "promotion_reason": decision.reason,
                         VALIDATION_MODEL_TAG: probe})
    mlflow.log_metrics(timer.metrics(), run_id=run.info.run_id)
    if decision.promote:
        registry.promote(MODEL_NAME, version)
    return TrainReport(run.info.run_id, version, metrics, champion_score, decision.promote,
                       decision.reason)
