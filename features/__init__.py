"""Canonical event and catalog schemas, the event log, importers, feature transforms and the
Feast feature repository. The bottom layer: it imports none of the other tailor packages."""
