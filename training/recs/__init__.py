"""Recommendations batch jobs: point-in-time training frames, training with the champion
gate, offline evaluation against baselines. Never imports `training.pricing`."""
