"""Recommendations at request time: `snapshot` (loading the champion, catalog, popularity,
candidates and online store into one immutable `Snapshot`), `caches` (item features kept in
process, the settled heap) and `recommender` (the `Recommender` and the request path)."""

from serving.recs.caches import ItemFeatureCache, settle_heap
from serving.recs.recommender import (
    Recommendation,
    Recommender,
    ReloadError,
    ScoredItem,
    Status,
)
from serving.recs.snapshot import CandidateTable, Catalog, Popularity, Snapshot

__all__ = [
    "CandidateTable", "Catalog", "ItemFeatureCache", "Popularity", "Recommendation",
    "Recommender", "ReloadError", "ScoredItem", "Snapshot", "Status", "settle_heap",
]
