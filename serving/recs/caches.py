"""What the recommender keeps in process between requests: the catalog with its items'
features, the candidates generated per user, and the garbage collector settled after a load.

`ItemFeatureCache` holds the catalog and every catalog item's features, read in bulk from a
`read` function; `lookup` answers from memory and, at most every `poll` seconds, starts a
background re-read when the registry's materialization `version` or the catalog file
changed (requests keep the previous values meanwhile; one reference is swapped, never
mutated). `UserCandidates` keeps the candidates generated at request time for users with
purchases the candidate state lacks, under a marker of the history they came from.
`settle_heap` moves what is loaded out of the collector's full passes.
"""

import gc
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path

import numpy as np
import pandas as pd

from features.ingest import read_catalog

logger = logging.getLogger(__name__)

Columns = dict[str, np.ndarray]


def file_signature(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is rewritten (modification time, size, inode; atomic
    replacement changes the inode); None when it does not exist."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


class Catalog:
    """The items the service may return, with their categories, as read from `path`."""

    def __init__(self, categories: pd.Series, path: Path,
                 signature: tuple[int, int, int] | None):
        self.categories = categories
        self.ids = frozenset(categories.index)
        self.category_of: dict[str, str] = categories.to_dict()
        self.path = path
        self.signature = signature
        """The file's `file_signature` before it was read."""

    @classmethod
    def read(cls, path: Path) -> "Catalog":
        signature = file_signature(path)
        frame = read_catalog(path).drop_duplicates("item_id", keep="last")
        return cls(frame.set_index("item_id")["category"], path, signature)

    def changed(self) -> bool:
        """Whether the file was rewritten since it was read."""
        return file_signature(self.path) != self.signature


class ItemFeatureCache:
    """A catalog and its items' features, both re-read (in a background thread) when the
    registry records a new materialization or the catalog file changes (items added,
    prices or categories changed), checked at most every `poll` seconds."""

    def __init__(self, read: Callable[[list[str]], pd.DataFrame], catalog: Catalog,
                 version: Callable[[], tuple], poll: float):
        self._read = read
        self._version = version
        self._poll = poll
        self.loaded_version = version()
        """The materialization intervals the cached values were read after."""
        self._keep(catalog, read(sorted(catalog.ids)))
        self._checked_at = time.monotonic()
        self._refreshing = threading.Lock()

    def _keep(self, catalog: Catalog, frame: pd.DataFrame) -> None:
        self.frame = frame
        """The cached features, one row per item id."""
        # The catalog and the columns with a NaN row after the items' (where unknown ids
        # point), in one reference that a refresh swaps whole.
        self._state: tuple[Catalog, dict[str, int], Columns] = (
            catalog, {item: row for row, item in enumerate(frame.index)},
            {name: np.append(frame[name].to_numpy(dtype=float, na_value=np.nan), np.nan)
             for name in frame.columns})

    @property
    def catalog(self) -> Catalog:
        """The catalog the cached features were read for."""
        return self._state[0]

    def lookup(self, item_ids: list[str]) -> Columns:
        """Each feature's values for the ids, in order (NaN where the store has no features
        for the item)."""
        due = time.monotonic() - self._checked_at > self._poll
        if due and self._refreshing.acquire(blocking=False):
            threading.Thread(target=self._refresh, name="item-features", daemon=True).start()
        _, positions, columns = self._state
        unknown = len(positions)
        rows = np.fromiter((positions.get(item, unknown) for item in item_ids), dtype=np.intp,
                           count=len(item_ids))
        return {name: column[rows] for name, column in columns.items()}

    def _refresh(self) -> None:
        """Re-read the catalog and its items if the catalog file changed or a
        materialization happened since they were read (runs in the thread `lookup` starts,
        holding the refresh lock)."""
        try:
            version = self._version()
            catalog = self.catalog
            if catalog.changed():
                catalog = Catalog.read(catalog.path)
            if version != self.loaded_version or catalog is not self.catalog:
                self._keep(catalog, self._read(sorted(catalog.ids)))
                self.loaded_version = version
                logger.info("item features re-read after a materialization or a catalog change")
        except Exception:
            logger.exception("refreshing cached item features failed; keeping the old ones")
        finally:
            self._checked_at = time.monotonic()
            self._refreshing.release()


class UserCandidates:
    """Candidate columns generated per user, at most `capacity` users (the least recently
    used go first), each kept under the marker of what it was generated from: a request
    whose marker differs (the user bought since, the catalog changed) generates anew."""

    def __init__(self, capacity: int):
        self._capacity = capacity
        self._entries: OrderedDict[str, tuple[Hashable, Columns]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, user_id: str, marker: Hashable, generate: Callable[[], Columns]) -> Columns:
        """The user's columns for `marker`, generated (outside the lock) when not kept."""
        with self._lock:
            entry = self._entries.get(user_id)
            if entry is not None and entry[0] == marker:
                self._entries.move_to_end(user_id)
                return entry[1]
        columns = generate()
        with self._lock:
            self._entries[user_id] = (marker, columns)
            self._entries.move_to_end(user_id)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return columns


def settle_heap() -> None:
    """Take what is loaded now out of the collector's full passes (`gc.freeze`), which
    would otherwise scan the candidate state and caches on every full collection and pause
    requests. Unfreezing first lets a collection free what a reload left behind."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
