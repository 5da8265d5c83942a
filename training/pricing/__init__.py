"""Pricing batch jobs: market files, fitting and training the demand model, suggestions,
evaluation against a simulated market's truth. Never imports `training.recs`."""
