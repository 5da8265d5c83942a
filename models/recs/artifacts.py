"""The recommender as training leaves it for serving: names, the candidate state, and loading
a registered version back.

A training run of `recs-ranker` logs two things serving needs: the native LightGBM booster
(registered under `MODEL_NAME`, the `champion` alias marks the one to serve) and the
artifact `CANDIDATE_STATE_ARTIFACT`, a pickled dict of the candidate sources of
`models.recs.candidates` fitted on the whole event log (`fit_sources`). The run's `until`
parameter is the cutoff those sources were fitted at.

Loaded for serving, the booster is also compiled to native code (`models.recs.compiled`,
cached across workers and reloads); `RegisteredRanker.predict` scores with it, or with the
booster when compiling failed (logged).
"""

import logging
import pickle
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.timestamps import to_utc
from models import registry
from models.recs.candidates import SOURCES
from models.recs.compiled import CompiledForest, compile_booster, default_cache_dir
from models.recs.ranker import FEATURE_COLUMNS

MODEL_NAME = "recs-ranker"
CANDIDATE_STATE_ARTIFACT = "candidate_state.pkl"
CUTOFF_PARAM = "until"

logger = logging.getLogger(__name__)


class IncompatibleModelError(ValueError):
    """A registered version that this code cannot serve (other features, other sources)."""


class CandidateStateError(IncompatibleModelError):
    """The candidate state artifact is not what this code can serve."""


def save_candidate_state(sources: dict, path: Path) -> None:
    """Write fitted candidate sources (`fit_sources`) as the candidate state artifact."""
    with open(path, "wb") as handle:
        pickle.dump(sources, handle)


def load_candidate_state(path: Path) -> dict:
    """The fitted candidate sources of a run (the artifact comes from our own tracking
    store: unpickling trusts it)."""
    with open(path, "rb") as handle:
        sources = pickle.load(handle)
    if not isinstance(sources, dict) or set(sources) != set(SOURCES):
        found = sorted(sources) if isinstance(sources, dict) else type(sources).__name__
        raise CandidateStateError(f"expected candidate sources {list(SOURCES)}, got {found}")
    return sources


def users_with_history(sources: dict) -> frozenset[str]:
    """Users the personal sources know (a purchase before the cutoff)."""
    return frozenset(sources["repurchase"].scores["user_id"].unique())


def proposing_source(candidates: pd.DataFrame) -> pd.Series:
    """Per candidate row, the source that proposed it with the best (lowest) rank; ties go
    to the earlier source of `SOURCES`; NaN where no source proposed the row."""
    ranks = candidates.reindex(columns=[f"{name}_rank" for name in SOURCES]).astype(float)
    values = ranks.to_numpy()
    proposed = ~np.isnan(values).all(axis=1)
    best = np.argmin(np.where(np.isnan(values), np.inf, values), axis=1)
    names = np.asarray(SOURCES, dtype=object)[best]
    return pd.Series(np.where(proposed, names, None), index=candidates.index, dtype=object)


@dataclass(frozen=True)
class RegisteredRanker:
    """A registered `recs-ranker` version with its run's candidate sources and their cutoff,
    and its trees compiled when that succeeded."""

    version: str
    run_id: str
    booster: lgb.Booster
    sources: dict
    cutoff: datetime | None
    compiled: CompiledForest | None = None

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Scores of `feature_matrix` rows, on the calling thread: the compiled trees', else
        the booster's (the same within 1e-6)."""
        if self.compiled is not None:
            return self.compiled.predict(features)
        return np.asarray(self.booster.predict(features, num_threads=1))


def compiled_or_none(booster: lgb.Booster, cache_dir: Path) -> CompiledForest | None:
    """The booster compiled, or None (a warning logged) when it cannot be."""
    try:
        return compile_booster(booster, cache_dir)
    except Exception:
        logger.warning("the ranker's trees could not be compiled: scoring with LightGBM's "
                       "predict", exc_info=True)
        return None


def load_ranker(version: registry.RegisteredVersion,
                compiled_dir: Path | None = None) -> RegisteredRanker:
    """Load a registered version: booster, candidate state and candidate cutoff, pinned to
    the version number, and its compiled trees (cached in `compiled_dir`, by default the
    temporary directory's); `IncompatibleModelError` when this code cannot serve it."""
    booster = registry.load_booster(registry.version_uri(MODEL_NAME, version.version))
    if booster.feature_name() != list(FEATURE_COLUMNS):
        raise IncompatibleModelError(f"{MODEL_NAME} version {version.version} was trained on "
                                     "other features than this code computes")
    with tempfile.TemporaryDirectory() as workdir:
        path = registry.download_artifact(version.run_id, CANDIDATE_STATE_ARTIFACT,
                                          Path(workdir))
        sources = load_candidate_state(path)
    until = registry.run_data(version.run_id)[0].get(CUTOFF_PARAM)
    cutoff = to_utc(until).to_pydatetime() if until else None
    compiled = compiled_or_none(booster, compiled_dir or default_cache_dir())
    return RegisteredRanker(str(version.version), version.run_id, booster, sources, cutoff,
                            compiled)
