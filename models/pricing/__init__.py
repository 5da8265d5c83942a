"""Pricing model code: the demand model, offers, the optimizer and its guardrails, the
registered demand model. Never imports `models.recs`."""
