"""Training frames of the recommender (candidates, labels, point-in-time features) and
the ranker's training on monthly cutoffs."""

from collections import ChainMap
from dataclasses import dataclass

import pandas as pd
from feast import FeatureStore

from features.feature_repo.definitions import RECS_RANKER_SERVICE
from models.recs.candidates import (
    CandidateConfig,
    fit_sources,
    generate_candidates,
    purchases_before,
)
from models.recs.ranker import FEATURE_COLUMNS, Ranker, RankerParams, feature_matrix
from training.recs.point_in_time import historical_features
from training.stages import StageTimer

HORIZON = pd.Timedelta(days=30)


def purchased_pairs(events: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Distinct (user, item) purchases of known users in [start, end)."""
    window = events[(events["event_type"] == "purchase") & events["user_id"].notna()
                    & (events["ts"] >= start) & (events["ts"] < end)]
    return window[["user_id", "item_id"]].drop_duplicates()


def features_at(store: FeatureStore, candidates: pd.DataFrame, cutoff: pd.Timestamp,
                catalog: pd.DataFrame) -> pd.DataFrame:
    """Candidates' ranking features (`FEATURE_COLUMNS`) from their `recs_ranker_v1` features
    at `cutoff` (point in time: only feature rows dated at or before it), on their index."""
    entities = candidates[["user_id", "item_id"]].assign(event_timestamp=cutoff, as_of=cutoff)
    features = historical_features(store, entities, RECS_RANKER_SERVICE)
    categories = candidates["item_id"].map(catalog.set_index("item_id")["category"])
    matrix = feature_matrix(ChainMap(candidates, features), categories.to_numpy())
    return pd.DataFrame(matrix, columns=list(FEATURE_COLUMNS), index=candidates.index)


@dataclass
class CutoffExamples:
    """Candidates of one cutoff with labels and features, and the sources fitted for it."""

    cutoff: pd.Timestamp
    frame: pd.DataFrame
    sources: dict


def build_examples(events: pd.DataFrame, catalog: pd.DataFrame, store: FeatureStore,
                   cutoff: pd.Timestamp, users: list[str] | None = None,
                   config: CandidateConfig | None = None,
                   timer: StageTimer | None = None) -> CutoffExamples:
    """Candidates at `cutoff` for `users` (default: history before the cutoff and a purchase
    in the following 30 days), labelled by those purchases, with point-in-time features;
    `timer` times the stages `sources`, `candidates` and `frames`."""
    timer = timer or StageTimer()
    with timer.stage("sources"):
        history = purchases_before(events, cutoff)
        sources = fit_sources(history, cutoff, config or CandidateConfig())
    with timer.stage("candidates"):
        bought = purchased_pairs(events, cutoff, cutoff + HORIZON)
        if users is None:
            users = sorted(set(bought["user_id"]) & set(history["user_id"]))
        del history
        candidates = generate_candidates(sources, users)
        labels = bought.assign(label=1)
        candidates = candidates.merge(labels, on=["user_id", "item_id"], how="left")
        candidates["label"] = candidates["label"].fillna(0).astype(int)
    with timer.stage("frames"):
        frame = pd.concat([candidates[["user_id", "item_id", "label"]],
                           features_at(store, candidates, cutoff, catalog)], axis=1)
        del candidates
        frame["query"] = frame["user_id"] + "@" + cutoff.strftime("%Y-%m-%d")
        frame = frame.sort_values(["query", "item_id"], ignore_index=True)
    return CutoffExamples(cutoff, frame, sources)


def fit_ranker(examples: list[CutoffExamples], params: RankerParams | None = None) -> Ranker:
    """Fit the ranker on the cutoffs' examples, oldest first; the latest validates."""
    # Queries without a positive teach a ranker nothing.
    frames = [e.frame[e.frame.groupby("query")["label"].transform("max") > 0] for e in examples]
    return Ranker(params).fit(pd.concat(frames[:-1], ignore_index=True), frames[-1])


def train_ranker(events: pd.DataFrame, catalog: pd.DataFrame, store: FeatureStore,
                 until: pd.Timestamp, cutoffs: int = 3, params: RankerParams | None = None,
                 timer: StageTimer | None = None) -> tuple[Ranker, list[CutoffExamples]]:
    """Train on cutoffs every 30 days before `until` (labels end by `until`); the latest
    cutoff validates for early stopping. `timer` times each cutoff's stages and `fits`."""
    timer = timer or StageTimer()
    stamps = [until - HORIZON * k for k in range(cutoffs, 0, -1)]
    examples = [build_examples(events, catalog, store, stamp, timer=timer) for stamp in stamps]
    with timer.stage("fits"):
        ranker = fit_ranker(examples, params)
    return ranker, examples
