"""Batch jobs: point-in-time training frames, time-based splits, evaluation and promotion.
May import `features` and `models`; never `serving`."""
