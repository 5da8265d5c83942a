"""The candidates of a request's user: the precomputed table's, or generated from the online
history when it holds purchases the candidate state lacks.

The stream consumer writes a user's purchases into the online store as they are accepted
(`user_stats` and the `user_item_index` arrays, as a materialization would). A request reads
those rows once (`OnlineStore.user`), and `user_candidates` picks the candidates:
- the user is known to the candidate state and bought nothing after its cutoff: the table;
- otherwise (a purchase after the cutoff, or a user the state never saw):
  `candidates_from_history` on the user's index arrays, kept in the ranking's
  `UserCandidates` under the history's `marker` and the catalog. Every purchase changes the
  marker (it adds to the times bought), so the user's next request after one regenerates:
  the online store is the only channel, no invalidation message is needed.
"""

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from features.online import EntityRows
from models.recs.candidates import candidates_from_history
from serving.recs.caches import Catalog, Columns
from serving.recs.snapshot import PAIR_VIEW, USER_VIEW, Ranking, candidate_columns

STATS = ("user_last_purchase_ts", "user_frequency")
INDEX = ("item_ids", "user_item_times_bought", "user_item_last_purchase_ts")


@dataclass(frozen=True)
class OnlineHistory:
    """A user's purchases as the online store aggregates them: the user's last purchase and
    order count, and per item (aligned) times bought and last purchase (Unix seconds, NaN
    when never bought)."""

    last_purchase: float
    frequency: float
    item_ids: list[str]
    times_bought: np.ndarray
    last_purchases: np.ndarray

    @classmethod
    def of(cls, user: EntityRows) -> "OnlineHistory | None":
        """From the user's rows; None when the store has no stats for the user."""
        stats = user.values(USER_VIEW, STATS)
        if stats is None:
            return None
        index = user.values(PAIR_VIEW, INDEX) or {}
        last = stats["user_last_purchase_ts"]
        return cls(math.nan if last is None else float(last),
                   math.nan if stats["user_frequency"] is None else float(stats["user_frequency"]),
                   index.get("item_ids") or [],
                   np.asarray(index.get("user_item_times_bought") or [], dtype=float),
                   np.asarray(index.get("user_item_last_purchase_ts") or [], dtype=float))

    @property
    def latest(self) -> float:
        """The latest purchase, user row or index alike (Unix seconds; NaN: none)."""
        return float(np.fmax.reduce(self.last_purchases, initial=self.last_purchase))

    @property
    def marker(self) -> tuple[float | None, float | None, int, float]:
        """What changes with every purchase (the times bought add up) and tells candidates
        generated before it from those generated after (None for NaN: equal to itself)."""
        return (None if math.isnan(self.last_purchase) else self.last_purchase,
                None if math.isnan(self.frequency) else self.frequency,
                len(self.item_ids), float(np.nansum(self.times_bought)))

    def frame(self) -> pd.DataFrame:
        """As `candidates_from_history` reads it."""
        return pd.DataFrame({
            "item_id": self.item_ids, "times_bought": self.times_bought,
            "last_purchase_ts": pd.to_datetime(self.last_purchases, unit="s", utc=True)})


def user_candidates(ranking: Ranking, user_id: str, history: OnlineHistory,
                    catalog: Catalog) -> Columns:
    """The user's candidates of `catalog`'s items: the table's when the candidate state
    holds all of the user's purchases, otherwise generated from `history` (kept until the
    user's next purchase or a catalog change)."""
    cutoff = ranking.model.cutoff
    known = user_id in ranking.candidates
    if known and (cutoff is None or not history.latest > cutoff.timestamp()):
        return ranking.candidates.of(user_id, catalog)
    return ranking.fresh.get(user_id, (history.marker, catalog),
                             lambda: _generate(ranking, user_id, history, cutoff, catalog))


def _generate(ranking: Ranking, user_id: str, history: OnlineHistory, cutoff: datetime | None,
              catalog: Catalog) -> Columns:
    """Candidates from the history, recency taken at its latest purchase (at the cutoff if
    that is later): for a user with no new purchase, what the table holds, approximately."""
    latest = None if math.isnan(history.latest) else pd.Timestamp(history.latest, unit="s",
                                                                  tz="UTC")
    now = max((pd.Timestamp(when) for when in (cutoff, latest) if when is not None),
              default=pd.Timestamp.now(tz="UTC"))
    frame = candidates_from_history(ranking.model.sources, user_id, history.frame(), now)
    return candidate_columns(frame[frame["item_id"].isin(catalog.ids)], catalog)
