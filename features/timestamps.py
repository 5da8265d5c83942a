"""The one UTC rule of the project: a naive time is taken as UTC, an aware one converted."""

from datetime import datetime

import pandas as pd


def to_utc(value: str | datetime | pd.Timestamp) -> pd.Timestamp:
    """`value` as a timezone-aware UTC `pd.Timestamp` (a `datetime` subclass)."""
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
