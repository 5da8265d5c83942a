"""The registered demand model: its name, the metadata logged beside the booster, loading a
version back as a `DemandModel`."""

from collections.abc import Mapping
from dataclasses import dataclass

import lightgbm as lgb
import pandas as pd

from features.settings import Settings
from models import registry
from models.pricing.demand import DemandModel, Period
from models.pricing.elasticity import PriceResponse

MODEL_NAME = "demand-model"
METADATA_ARTIFACT = "demand_model.json"
METADATA_FORMAT = 3  # 2: a base-level booster and a pooled price response; 3: the response
# carries its own reference price per series (no per-series level)


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
                    valid_start: pd.Timestamp) -> dict:
    """What predicting needs beside the booster, logged as `METADATA_ARTIFACT`."""
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
    }


def load_demand_model(settings: Settings, version: str | None = None) -> RegisteredDemand:
    """A registered `demand-model` version (default: the champion) with its metadata;
    LookupError when there is none, `IncompatibleDemandModelError` when it has an older
    format."""
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
    return RegisteredDemand(BoosterDemandModel(booster, metadata), str(found.version),
                            model_version_label(str(found.version)), metadata["period"],
                            metadata)
