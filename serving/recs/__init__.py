"""Recommendations at request time: `snapshot` (loading the champion, catalog, popularity,
candidates and online store into one immutable `Snapshot`), `caches` (the catalog and item
features kept in process, candidates generated per user, the settled heap), `fresh` (the
request's candidates: the table's, or generated from the online history) and `recommender`
(the `Recommender` and the request path)."""

from serving.recs.caches import Catalog, ItemFeatureCache, UserCandidates, settle_heap
from serving.recs.recommender import (
    Recommendation,
    Recommender,
    ReloadError,
    ScoredItem,
    Status,
)
from serving.recs.snapshot import CandidateTable, Popularity, Snapshot

__all__ = [
    "CandidateTable", "Catalog", "ItemFeatureCache", "Popularity", "Recommendation",
    "Recommender", "ReloadError", "ScoredItem", "Snapshot", "Status", "UserCandidates",
    "settle_heap",
]
