"""Deprecated alias of `serving.recs` (the recommender moved there); kept only until
`benchmarks/serving.py` imports from `serving.recs`, then deleted."""

from serving.recs import CandidateTable, Catalog, Recommender

__all__ = ["CandidateTable", "Catalog", "Recommender"]
