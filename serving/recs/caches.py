"""What the recommender keeps in process between requests: the item-feature cache and the
garbage collector settled after a load.

`ItemFeatureCache` holds every catalog item's features, read in bulk from a `read` function;
`lookup` answers from memory and, at most every `poll` seconds, starts a background re-read
when the registry's materialization `version` changed (requests keep the previous values
meanwhile; one reference is swapped, never mutated). `settle_heap` moves what is loaded out
of the collector's full passes.
"""

import gc
import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

Columns = dict[str, np.ndarray]


class ItemFeatureCache:
    """Item features of every catalog item, re-read (in a background thread) when the
    registry records a new materialization, checked at most every `poll` seconds."""

    def __init__(self, read: Callable[[list[str]], pd.DataFrame], item_ids: list[str],
                 version: Callable[[], tuple], poll: float):
        self._read = read
        self._item_ids = item_ids
        self._version = version
        self._poll = poll
        self.loaded_version = version()
        """The materialization intervals the cached values were read after."""
        self._keep(read(item_ids))
        self._checked_at = time.monotonic()
        self._refreshing = threading.Lock()

    def _keep(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        """The cached features, one row per item id."""
        # Columns with a NaN row after the items' (where unknown ids point), in one
        # reference that a refresh swaps whole.
        self._columns: tuple[dict[str, int], Columns] = (
            {item: row for row, item in enumerate(frame.index)},
            {name: np.append(frame[name].to_numpy(dtype=float, na_value=np.nan), np.nan)
             for name in frame.columns})

    def lookup(self, item_ids: list[str]) -> Columns:
        """Each feature's values for the ids, in order (NaN where the store has no features
        for the item)."""
        due = time.monotonic() - self._checked_at > self._poll
        if due and self._refreshing.acquire(blocking=False):
            threading.Thread(target=self._refresh, name="item-features", daemon=True).start()
        positions, columns = self._columns
        unknown = len(positions)
        rows = np.fromiter((positions.get(item, unknown) for item in item_ids), dtype=np.intp,
                           count=len(item_ids))
        return {name: column[rows] for name, column in columns.items()}

    def _refresh(self) -> None:
        """Re-read the items if a materialization happened since they were read (runs in
        the thread `lookup` starts, holding the refresh lock)."""
        try:
            version = self._version()
            if version != self.loaded_version:
                self._keep(self._read(self._item_ids))
                self.loaded_version = version
                logger.info("item features re-read after a materialization")
        except Exception:
            logger.exception("refreshing cached item features failed; keeping the old ones")
        finally:
            self._checked_at = time.monotonic()
            self._refreshing.release()


def settle_heap() -> None:
    """Take what is loaded now out of the collector's full passes (`gc.freeze`), which
    would otherwise scan the candidate state and caches on every full collection and pause
    requests. Unfreezing first lets a collection free what a reload left behind."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
