"""The registered demand model: its name, the metadata logged beside the booster, loading a
version back as a `DemandModel`."""

from collections.abc import Mapping
from dataclasses import dataclass

import lightgbm as lgb
import pandas as pd

from features.settings import Settings
from features.timestamps import to_utc
from models import registry
from models.pricing.demand import DemandModel, Period
from models.pricing.elasticity import PriceResponse

MODEL_NAME = "demand-model"
METADATA_ARTIFACT = "demand_model.json"
METADATA_FORMAT = 3  # 2: a base-level booster and a pooled price response; 3: the response
# carries its own reference price per series (no per-series level)
VALIDATION_MODEL = "validation_model"
"""Where a run logs the booster fitted before its validation window (the registered model is
refitted on every period); its URI and metadata sit in the registered model's metadata."""


class IncompatibleDemandModelError(ValueError):
    """A registered demand model version that this code cannot load (an older format)."""


class BoosterDemandModel(DemandModel):
    """A `DemandModel` around a registered native LightGBM booster and its metadata."""

    def __init__(self, booster: lgb.Booster, metadata: Mapping):
        super().__init__(metadata["features"], metadata["curvatures"], **metadata["params"])
        self._booster = booster
        self.response = PriceResponse.from_dict(metadata["response"])
        self.intercept = float(metadata["intercept"])
        self.codes = {name: dict(codes) for name, codes in metadata["codes"].items()}
        self.best_iteration = int(metadata["best_iteration"])

    @property
    def booster(self) -> lgb.Booster:
        return self._booster


@dataclass(frozen=True)
class RegisteredDemand:
    """A registered demand model version, ready to predict."""

    model: DemandModel
    version: str
    model_version: str  # "demand-model:<version>", stored with every suggestion
    period: Period
    metadata: dict


def model_version_label(version: str) -> str:
    return f"{MODEL_NAME}:{version}"


def demand_metadata(model: DemandModel, period: Period, as_of: pd.Timestamp,
                    valid_start: pd.Timestamp, trained_until: pd.Timestamp,
                    validation_model: dict | None = None) -> dict:
    """What predicting needs beside the booster, logged as `METADATA_ARTIFACT`;
    `trained_until` is the end of the periods the model trained on, `validation_model` the
    URI and metadata of the model fitted before the validation window, when this one was
    refitted on it."""
    return {
        "format": METADATA_FORMAT,
        "period": period,
        "features": model.features,
        "curvatures": list(model.curvatures),
        "response": model.price_response.to_dict(),
        "intercept": model.intercept,
        "params": model.params,
        "codes": model.codes,
        "best_iteration": model.fitted_rounds,
        "as_of": as_of.isoformat(),
        "valid_start": valid_start.isoformat(),
        "trained_until": trained_until.isoformat(),
        **({VALIDATION_MODEL: validation_model} if validation_model else {}),
    }


def load_demand_model(settings: Settings, version: str | None = None,
                      unseen_from: pd.Timestamp | None = None) -> RegisteredDemand:
    """A registered `demand-model` version (default: the champion) with its metadata;
    LookupError when there is none, `IncompatibleDemandModelError` when it has an older
    format. With `unseen_from`, a version that trained on periods from then on (its refit ran
    into that window) is loaded as its validation model, fitted before its own window, so it
    can be scored on data it never saw."""
    registry.configure(settings)
    if version is None:
        found = registry.champion(MODEL_NAME)
        if found is None:
            raise LookupError(f"no '{registry.CHAMPION}' version of {MODEL_NAME} is registered")
    else:
        found = registry.model_version(MODEL_NAME, version)
    booster = registry.load_booster(registry.version_uri(MODEL_NAME, found.version))
    metadata = registry.load_dict(found.run_id, METADATA_ARTIFACT)
    if metadata.get("format") != METADATA_FORMAT:
        raise IncompatibleDemandModelError(
            f"{MODEL_NAME} version {found.version} has metadata format {metadata.get('format')}, "
            f"this code loads format {METADATA_FORMAT}: train a new version")
    # Versions from before the refit trained until their validation window began.
    trained_until = to_utc(metadata.get("trained_until", metadata["valid_start"]))
    if unseen_from is not None and trained_until > unseen_from and VALIDATION_MODEL in metadata:
        booster = registry.load_booster(metadata[VALIDATION_MODEL]["uri"])
        metadata = metadata[VALIDATION_MODEL]["metadata"]
    return RegisteredDemand(BoosterDemandModel(booster, metadata), str(found.version),
                            model_version_label(str(found.version)), metadata["period"],
                            metadata)
