"""A deterministic scale-up of an event log, for measuring how training grows with data.

`scale_events(events, factor)` keeps the log and adds `factor - 1` copies of it in which every
customer is a new one: copy k gives each user, session (order) and event id the suffix `~k`,
and moves all the events of one copied customer (a guest order counts as a customer) back by
one shift drawn for it, uniform in [0, `max_shift`). Each clone keeps its original's orders,
baskets, quantities, prices and the gaps between its orders; the clones spread over nearby
days; items are shared, so per-item demand grows with the factor. No event moves later, so the
log's last instant, and the training cutoffs taken from it, stay where they were. The shifts
depend only on the set of customers, the copy and `seed`: the same log always scales the same.
"""

import numpy as np
import pandas as pd

DEFAULT_MAX_SHIFT = pd.Timedelta(days=3)


def _customers(events: pd.DataFrame) -> pd.Series:
    """Whose behaviour each event is: its user, else (a guest) its order, else itself."""
    return ("user:" + events["user_id"]).fillna("session:" + events["session_id"]).fillna(
        "event:" + events["event_id"])


def scale_events(events: pd.DataFrame, factor: int, seed: int = 0,
                 max_shift: pd.Timedelta = DEFAULT_MAX_SHIFT) -> pd.DataFrame:
    """`events` and `factor - 1` copies with cloned customers (see the module), same columns
    and dtypes, sorted by time and event id."""
    if factor < 1:
        raise ValueError(f"the scale factor must be at least 1, got {factor}")
    keys, customer = np.unique(_customers(events).to_numpy(dtype=str), return_inverse=True)
    copies = [events]
    for copy in range(1, factor):
        shift = np.random.default_rng([seed, copy]).integers(
            0, int(max_shift / pd.Timedelta(seconds=1)), size=len(keys))
        clone = events.copy()
        for column in ("event_id", "user_id", "session_id"):
            clone[column] = events[column] + f"~{copy}"
        moved = events["ts"] - pd.to_timedelta(shift[customer], unit="s")
        clone["ts"] = moved.astype(events["ts"].dtype)
        copies.append(clone)
    scaled = pd.concat(copies, ignore_index=True)
    return scaled.sort_values(["ts", "event_id"], ignore_index=True)
