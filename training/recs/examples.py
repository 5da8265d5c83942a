"""Training frames of the recommender (candidates, labels, point-in-time features) and
the ranker's training on monthly cutoffs."""

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
from models.recs.ranker import Ranker, RankerParams, ranking_features

HORIZON = pd.Timedelta(days=30)


def purchased_pairs(events: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Distinct (user, item) purchases of known users in [start, end)."""
    window = events[(events["event_type"] == "purchase") & events["user_id"].notna()
                    & (events["ts"] >= start) & (events["ts"] < end)]
    return window[["user_id", "item_id"]].drop_duplicates()


def with_features(store: FeatureStore, candidates: pd.DataFrame, cutoff: pd.Timestamp):
    """Candidates joined point-in-time with their `recs_ranker_v1` features at `cutoff`."""
    entities = candidates[["user_id", "item_id"]].assign(event_timestamp=cutoff, as_of=cutoff)
    features = store.get_historical_features(
        entity_df=entities, features=store.get_feature_service(RECS_RANKER_SERVICE)
    ).to_df()
    features = features.drop(columns=["event_timestamp", "as_of"])
    return candidates.merge(features, on=["user_id", "item_id"], how="left")


@dataclass
class CutoffExamples:
    """Candidates of one cutoff with labels and features, and the sources fitted for it."""

    cutoff: pd.Timestamp
    frame: pd.DataFrame
    sources: dict


def build_examples(events: pd.DataFrame, catalog: pd.DataFrame, store: FeatureStore,
                   cutoff: pd.Timestamp, users: list[str] | None = None,
                   config: CandidateConfig | None = None) -> CutoffExamples:
    """Candidates at `cutoff` for `users` (default: history before the cutoff and a purchase
    in the following 30 days), labelled by those purchases, with point-in-time features."""
    history = purchases_before(events, cutoff)
    bought = purchased_pairs(events, cutoff, cutoff + HORIZON)
    if users is None:
        users = sorted(set(bought["user_id"]) & set(history["user_id"]))
    sources = fit_sources(history, cutoff, config or CandidateConfig())
    candidates = generate_candidates(sources, users)
    labels = bought.assign(label=1)
    candidates = candidates.merge(labels, on=["user_id", "item_id"], how="left")
    candidates["label"] = candidates["label"].fillna(0).astype(int)
    frame = with_features(store, candidates, cutoff)
    frame = pd.concat([frame[["user_id", "item_id", "label"]],
                       ranking_features(frame, catalog.set_index("item_id")["category"])], axis=1)
    frame["query"] = frame["user_id"] + "@" + cutoff.strftime("%Y-%m-%d")
    return CutoffExamples(cutoff, frame.sort_values(["query", "item_id"], ignore_index=True),
                          sources)


def fit_ranker(examples: list[CutoffExamples], params: RankerParams | None = None) -> Ranker:
    """Fit the ranker on the cutoffs' examples, oldest first; the latest validates."""
    # Queries without a positive teach a ranker nothing.
    frames = [e.frame[e.frame.groupby("query")["label"].transform("max") > 0] for e in examples]
    return Ranker(params).fit(pd.concat(frames[:-1], ignore_index=True), frames[-1])


def train_ranker(events: pd.DataFrame, catalog: pd.DataFrame, store: FeatureStore,
                 until: pd.Timestamp, cutoffs: int = 3, params: RankerParams | None = None
                 ) -> tuple[Ranker, list[CutoffExamples]]:
    """Train on cutoffs every 30 days before `until` (labels end by `until`); the latest
    cutoff validates for early stopping."""
    stamps = [until - HORIZON * k for k in range(cutoffs, 0, -1)]
    examples = [build_examples(events, catalog, store, stamp) for stamp in stamps]
    return fit_ranker(examples, params), examples
