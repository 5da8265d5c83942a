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
import hashlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import redis

from features.ingest import read_catalog
from features.online import EntityRows

logger = logging.getLogger(__name__)

Columns = dict[str, np.ndarray]
RACE_SECONDS = 60.0
"""Longer than any request takes: invalidations older than this cannot race a request."""


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
    """A catalog and its items' features, re-read (in a background thread) when the registry
    records a new materialization or the catalog file changes (items added, prices or
    categories changed), checked at most every `poll` seconds; and per item when the stream
    consumer rewrote some items' rows (`update`). `generation` counts the whole re-reads:
    answers computed under an older one are out of date."""

    def __init__(self, read: Callable[[list[str]], pd.DataFrame], catalog: Catalog,
                 version: Callable[[], tuple], poll: float):
        self._read = read
        self._version = version
        self._poll = poll
        self.generation = 0
        self.loaded_version = version()
        """The materialization intervals the cached values were read after."""
        self._keep(catalog, read(sorted(catalog.ids)))
        self.state = _state_of(self.loaded_version, catalog)
        self._checked_at = time.monotonic()
        self._refreshing = threading.Lock()
        self._pending = threading.Lock()
        self._updated: set[str] = set()
        self._reread_all = False

    def _keep(self, catalog: Catalog, frame: pd.DataFrame) -> None:
        self.frame = frame
        """The cached features, one row per item id."""
        # The catalog, the feature names and a matrix of them (a row per feature, a column
        # per item, then a NaN column where unknown ids point), in one reference that a
        # refresh swaps whole.
        values = np.full((len(frame.columns), len(frame) + 1), np.nan)
        values[:, :-1] = frame.to_numpy(dtype=float, na_value=np.nan).T
        self._state: tuple[Catalog, dict[str, int], list[str], np.ndarray] = (
            catalog, {item: row for row, item in enumerate(frame.index)},
            list(frame.columns), values)

    @property
    def catalog(self) -> Catalog:
        """The catalog the cached features were read for."""
        return self._state[0]

    def poll(self) -> None:
        """Start a refresh when one is due (`poll` seconds since the last check, or items
        to re-read); requests call it."""
        if self._updated or time.monotonic() - self._checked_at > self._poll:
            self._start_refresh()

    def lookup(self, item_ids: list[str]) -> Columns:
        """Each feature's values for the ids, in order (NaN where the store has no features
        for the item)."""
        _, positions, names, values = self._state
        rows = np.fromiter(map(positions.get, item_ids, repeat(len(positions))),
                           dtype=np.intp, count=len(item_ids))
        return dict(zip(names, values[:, rows], strict=True))  # one gather, a row per name

    def update(self, item_ids: frozenset[str], everything: bool = False) -> None:
        """Re-read these items' features soon (in the background); `everything`: re-read
        the whole catalog's (some changes went unseen)."""
        with self._pending:
            self._updated |= item_ids
            self._reread_all |= everything
        self._start_refresh()

    def _start_refresh(self) -> None:
        if self._refreshing.acquire(blocking=False):
            threading.Thread(target=self._refresh_all, name="item-features", daemon=True).start()

    def _refresh_all(self) -> None:
        """Refresh until no update is pending, then release the refresh lock."""
        try:
            self._refresh()
            while self._updated or self._reread_all:
                self._refresh()
        finally:
            self._refreshing.release()

    def _refresh(self) -> None:
        """When `poll` seconds passed since the last check: re-read the catalog and its
        items if the catalog file changed or a materialization happened since they were
        read. Else re-read the items `update` named. (Runs in the thread `_start_refresh`
        starts, under the refresh lock.)"""
        try:
            with self._pending:
                updated, self._updated = self._updated, set()
                reread_all, self._reread_all = self._reread_all, False
            catalog, version = self.catalog, self.loaded_version
            if time.monotonic() - self._checked_at > self._poll:
                version = self._version()
                if catalog.changed():
                    catalog = Catalog.read(catalog.path)
                self._checked_at = time.monotonic()
            if version != self.loaded_version or catalog is not self.catalog or reread_all:
                self._keep(catalog, self._read(sorted(catalog.ids)))
                self.loaded_version = version
                self.state = _state_of(version, catalog)
                self.generation += 1
                logger.info("item features re-read after a materialization or a catalog change")
            elif updated & catalog.ids:
                self._keep_rows(self._read(sorted(updated & catalog.ids)))
        except Exception:
            logger.exception("refreshing cached item features failed; keeping the old ones")
            self._checked_at = time.monotonic()

    state: str
    """What the whole re-reads read (materializations and catalog file), the same in every
    worker that read the same: what answers shared between workers are checked against."""

    def _keep_rows(self, rows: pd.DataFrame) -> None:
        """Replace some items' features (same catalog, same generation)."""
        frame = self.frame.copy()
        frame.loc[rows.index, rows.columns] = rows
        self._keep(self.catalog, frame)


def _state_of(version: tuple, catalog: Catalog) -> str:
    return hashlib.sha256(repr((version, catalog.signature)).encode()).hexdigest()[:16]


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


@dataclass(frozen=True)
class RankedList:
    """A user's candidates scored, best first (ties by item id): `item_id`, `score`,
    `source` and `category` columns (none when the store has no features for the user:
    popularity answers), and the user's rows they were scored from when this worker scored
    them (None when shared by another)."""

    history: bool
    columns: Columns
    generation: int
    """The item features' `ItemFeatureCache.generation` it was scored with."""
    user: EntityRows | None = None


class ResultCache:
    """Users' `RankedList`s, at most `capacity` users (least recently used go first), each
    for at most `ttl` seconds (what bounds the drift of time-based features). An entry is
    out of date when the item features were re-read since (`generation`); `invalidate`
    drops users whose rows changed, and an answer computed before that is not kept."""

    def __init__(self, capacity: int, ttl: float):
        self._capacity = capacity
        self._ttl = ttl
        self._entries: OrderedDict[str, tuple[float, RankedList]] = OrderedDict()
        self._invalidated: dict[str, float] = {}
        self._cleared = 0.0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, user_id: str, generation: int) -> RankedList | None:
        """The user's list if kept, fresh and of this generation (counted as a hit)."""
        with self._lock:
            entry = self._entries.get(user_id)
            if entry is not None and entry[0] > time.monotonic() \
                    and entry[1].generation == generation:
                self._entries.move_to_end(user_id)
                self.hits += 1
                return entry[1]
            self.misses += 1
            return None

    def put(self, user_id: str, ranked: RankedList, started: float, age: float = 0.0) -> None:
        """Keep a list computed from data read after `started` (`time.monotonic()`; `age`
        seconds before, for a list scored elsewhere), unless the user was invalidated
        since."""
        with self._lock:
            if started <= max(self._cleared, self._invalidated.get(user_id, 0.0)):
                return
            self._entries[user_id] = (started - age + self._ttl, ranked)
            self._entries.move_to_end(user_id)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)

    def invalidate(self, user_ids: Collection[str]) -> None:
        """Drop these users' lists (their rows changed)."""
        now = time.monotonic()
        with self._lock:
            for user_id in user_ids:
                self._entries.pop(user_id, None)
                self._invalidated[user_id] = now
            if len(self._invalidated) > self._capacity:  # forget what no request can race
                self._invalidated = {user: at for user, at in self._invalidated.items()
                                     if at > now - RACE_SECONDS}

    def clear(self) -> None:
        """Drop every list (some changes went unseen)."""
        with self._lock:
            self._entries.clear()
            self._invalidated.clear()
            self._cleared = time.monotonic()


@dataclass(frozen=True)
class SharedList:
    """A ranked list as another worker left it: scored with every change notice up to
    `read_through` applied (a change feed cursor)."""

    read_through: str
    history: bool
    columns: Columns
    scored_at: float
    """When the scoring started (`time.time()`): the list's TTL counts from there."""


class SharedResults:
    """Ranked lists shared by the workers in Redis (`<name>:results:<user>`), each kept
    `ttl` seconds under the model version and item state (`ItemFeatureCache.state`) it was
    scored with; whether it is still fresh for the user's change notices is for the reader
    to tell (`read_through`)."""

    def __init__(self, client: Any, name: str, ttl: float):
        self.client = client
        self.prefix = f"{name}:results:"
        self.ttl = ttl
        self.hits = 0

    def get(self, user_id: str, state: str) -> SharedList | None:
        """The user's list if one was kept under `state` (None too when Redis fails: the
        worker scores the user itself)."""
        try:
            value = self.client.get(self.prefix + user_id)
        except redis.RedisError as error:
            logger.warning("reading shared results failed: %s", error)
            return None
        if value is None:
            return None
        found = json.loads(value)
        if found["state"] != state:
            return None
        columns = {"item_id": np.array(found["item_id"], dtype=object),
                   "score": np.array(found["score"], dtype=float),
                   "source": np.array(found["source"], dtype=object),
                   "category": np.array(found["category"], dtype=object)}
        return SharedList(found["read_through"], found["history"], columns, found["scored_at"])

    def put(self, user_id: str, state: str, read_through: str, ranked: RankedList,
            scored_at: float) -> None:
        value = {"state": state, "read_through": read_through, "history": ranked.history,
                 "scored_at": scored_at,
                 **{name: ranked.columns[name].tolist() if ranked.history else []
                    for name in ("item_id", "score", "source", "category")}}
        try:
            self.client.set(self.prefix + user_id, json.dumps(value), ex=max(int(self.ttl), 1))
        except redis.RedisError as error:
            logger.warning("sharing results failed: %s", error)
