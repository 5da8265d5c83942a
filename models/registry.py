"""The one place that talks to MLflow: tracking, the model registry and the `champion` alias.

Embedded default: a SQLite tracking store and local artifacts under `<data dir>/mlflow`;
`MLFLOW_TRACKING_URI` (or `TAILOR_MLFLOW_TRACKING_URI`) points at a server instead.
"""

import os
from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from features.settings import Settings

CHAMPION = "champion"


def configure(settings: Settings) -> str:
    """Point MLflow at the settings' tracking store; returns its URI."""
    if settings.mlflow_tracking_uri:
        uri = settings.mlflow_tracking_uri
    else:
        settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{settings.mlflow_dir / 'mlflow.db'}"
    exported = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # MLflow exports the URI to the environment; the next Settings() of this process would
    # take that embedded default for the user's choice of server.
    if exported is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = exported
    return uri


def use_experiment(name: str, settings: Settings) -> str:
    """Select (creating if needed) an experiment whose local artifacts live in the data dir."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if not settings.mlflow_tracking_uri:
            location = (settings.mlflow_dir / "artifacts").as_uri()
        experiment_id = client.create_experiment(name, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def champion(model_name: str) -> ModelVersion | None:
    """The registered version the `champion` alias points at, if any."""
    try:
        return MlflowClient().get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None


def champion_uri(model_name: str) -> str:
    return f"models:/{model_name}@{CHAMPION}"


@dataclass(frozen=True)
class PromotionDecision:
    """Whether a challenger replaces the champion, and why."""

    promote: bool
    reason: str


def decide_promotion(metric: str, challenger: float, champion_score: float | None,
                     higher_is_better: bool = True) -> PromotionDecision:
    """Promote when there is no champion or the challenger is strictly better on the same
    validation data."""
    if champion_score is None:
        return PromotionDecision(True, "no champion yet")
    better = challenger > champion_score if higher_is_better else challenger < champion_score
    verdict = "better" if better else "not better"
    reason = (f"challenger {metric} {challenger:.4f} is {verdict} than the champion's "
              f"{champion_score:.4f} on the same validation data")
    return PromotionDecision(better, reason)


def promote(model_name: str, version: str) -> None:
    """Move the `champion` alias to `version` (reversible: move it back)."""
    MlflowClient().set_registered_model_alias(model_name, CHAMPION, version)
