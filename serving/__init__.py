"""The FastAPI service. May import `features` and `models`; never `training`."""
