"""The one place that talks to the MLflow tracking server and model registry.

Embedded default: a SQLite tracking store and local artifacts under `<data dir>/mlflow`;
`MLFLOW_TRACKING_URI` (or `TAILOR_MLFLOW_TRACKING_URI`) points at a server instead. Training
jobs log params, metrics and artifacts with MLflow's fluent API inside the run this module
starts (`start_run`); registered models, aliases, runs and artifacts are read only here.
Promotion is one gate (`decide_promotion`) and one reversible move of the `champion` alias.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import mlflow
from mlflow import ActiveRun, MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from features.settings import Settings

CHAMPION = "champion"
BOOSTER_REQUIREMENTS = mlflow.lightgbm.get_default_pip_requirements()
"""What a logged native booster needs: given, MLflow does not infer it by loading the model in
a subprocess (4 to 5 s per model logged)."""


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


@contextmanager
def start_run(experiment: str, settings: Settings) -> Iterator[ActiveRun]:
    """A new run of `experiment` in the settings' tracking store."""
    configure(settings)
    use_experiment(experiment, settings)
    with mlflow.start_run() as run:
        yield run


@dataclass(frozen=True)
class RegisteredVersion:
    """A registered model version and the run that logged it."""

    model_name: str
    version: str
    run_id: str


def _registered(found: ModelVersion) -> RegisteredVersion:
    if found.run_id is None:
        raise LookupError(f"{found.name} version {found.version} was not logged by a run")
    return RegisteredVersion(found.name, str(found.version), found.run_id)


def champion(model_name: str) -> RegisteredVersion | None:
    """The registered version the `champion` alias points at, if any."""
    try:
        found = MlflowClient().get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None
    return _registered(found)


def model_version(model_name: str, version: str) -> RegisteredVersion:
    """A registered version; LookupError when there is no such version."""
    try:
        found = MlflowClient().get_model_version(model_name, str(version))
    except MlflowException:
        raise LookupError(f"{model_name} has no version {version}") from None
    return _registered(found)


def champion_uri(model_name: str) -> str:
    return f"models:/{model_name}@{CHAMPION}"


def version_uri(model_name: str, version: str) -> str:
    """Pinned to the version number: the alias moving meanwhile cannot mix two runs."""
    return f"models:/{model_name}/{version}"


def load_booster(uri: str) -> lgb.Booster:
    """A native LightGBM booster logged by `log_booster` (no pickled wrapper to trust)."""
    return mlflow.lightgbm.load_model(uri)


def log_booster(booster: lgb.Booster, name: str) -> str:
    """Log a booster in LightGBM's own format to the active run; returns its model URI."""
    return mlflow.lightgbm.log_model(booster, name=name,
                                     pip_requirements=BOOSTER_REQUIREMENTS).model_uri


def register_booster(booster: lgb.Booster, name: str, model_name: str) -> str:
    """`log_booster`, registered as a new version of `model_name`; returns the version."""
    info = mlflow.lightgbm.log_model(booster, name=name, registered_model_name=model_name,
                                     pip_requirements=BOOSTER_REQUIREMENTS)
    return str(info.registered_model_version)


def run_data(run_id: str) -> tuple[dict[str, str], dict[str, str]]:
    """A run's (params, tags)."""
    data = MlflowClient().get_run(run_id).data
    return dict(data.params), dict(data.tags)


def download_artifact(run_id: str, artifact_path: str, destination: Path) -> Path:
    """Copy a run's artifact into `destination`; returns the local path."""
    return Path(mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=artifact_path, dst_path=str(destination)))


def load_dict(run_id: str, artifact_path: str) -> dict:
    """A JSON or YAML artifact of a run (logged with `mlflow.log_dict`)."""
    return mlflow.artifacts.load_dict(f"runs:/{run_id}/{artifact_path}")


@dataclass(frozen=True)
class ChampionScore:
    """The champion scored on the challenger's validation data; `score` is None (with the
    reason in `incomparable`) when the two cannot be compared."""

    version: str
    score: float | None
    incomparable: str | None = None


@dataclass(frozen=True)
class PromotionDecision:
    """Whether a challenger replaces the champion, and why."""

    promote: bool
    reason: str


def decide_promotion(metric: str, challenger: float, champion_score: ChampionScore | None,
                     higher_is_better: bool = True) -> PromotionDecision:
    """Promote when there is no champion, when it cannot be compared, or when the challenger
    is strictly better on the same validation data."""
    if champion_score is None:
        return PromotionDecision(True, "no champion yet")
    if champion_score.score is None:
        return PromotionDecision(True, champion_score.incomparable or
                                 f"champion v{champion_score.version} is not comparable")
    score = champion_score.score
    better = challenger > score if higher_is_better else challenger < score
    verdict = "better" if better else "not better"
    reason = (f"challenger {metric} {challenger:.4f} is {verdict} than the champion's "
              f"{score:.4f} on the same validation data")
    return PromotionDecision(better, reason)


def promote(model_name: str, version: str) -> None:
    """Move the `champion` alias to `version` (reversible: move it back)."""
    MlflowClient().set_registered_model_alias(model_name, CHAMPION, version)
