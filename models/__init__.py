"""Model code: candidate generators, rankers, demand models and the MLflow registry access.
May import `features`; never `training`, `serving` or `cli`."""
