"""Recommendations model code: candidate sources, the ranker, the registered artifacts.
Never imports `models.pricing`."""
