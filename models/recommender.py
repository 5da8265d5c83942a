"""The recommender as training leaves it for serving: names and the candidate state.

A training run of `recs-ranker` logs two things serving needs: the native LightGBM booster
(registered under `MODEL_NAME`, the `champion` alias marks the one to serve) and the
artifact `CANDIDATE_STATE_ARTIFACT`, a pickled dict of the candidate sources of
`models.candidates` fitted on the whole event log (`fit_sources`). The run's `until`
parameter is the cutoff those sources were fitted at.
"""

import pickle
from pathlib import Path

import numpy as np
import pandas as pd

from models.candidates import SOURCES

MODEL_NAME = "recs-ranker"
CANDIDATE_STATE_ARTIFACT = "candidate_state.pkl"
CUTOFF_PARAM = "until"


class CandidateStateError(ValueError):
    """The candidate state artifact is not what this code can serve."""


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
