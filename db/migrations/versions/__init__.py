"""The revisions of the service database, oldest first (`NNNN_what.py`, revision `NNNN`)."""
