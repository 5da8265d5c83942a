"""Recommendations at request time: candidates, online features, the ranker, the fallback.

One `Recommender` per worker process. Everything a request reads is in an immutable
`Snapshot` (the champion with its candidate state, the catalog, the popularity ranking and
the item-feature cache), picked up once per request: a reload builds the next snapshot to
the side and swaps one reference, so a request sees the old model or the new one, never a
mix, and the old one keeps answering until the new one is fully loaded.

Personalised path: the candidates of every user the champion's candidate state knows are
generated once per snapshot (`CandidateTable`), so a request looks its user's rows up; items
excluded or of another category are dropped (and popular items passing the same filters fill
up to `k`); user and user x item features come from the online store in one read per view
(`features.online.ServiceReader`: the `recs_ranker_v1` views minus the item ones, with the
recency view computed for `as_of`), item features from the in-process cache, re-read when the
registry records a new materialization; `feature_matrix` and the booster order them.
Anything missing on the way answers with the popularity fallback.
"""

import gc
import logging
import threading
import time
from collections import ChainMap
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from features.event_log import EventLog
from features.feature_repo import definitions
from features.ingest import read_catalog
from features.online import ServiceReader
from features.settings import Settings
from features.store import feature_store, materializations
from models import registry
from models.recs.artifacts import (
    MODEL_NAME,
    RegisteredRanker,
    load_ranker,
    proposing_source,
    users_with_history,
)
from models.recs.candidates import (
    CandidateConfig,
    PopularSource,
    generate_candidates,
    purchases_before,
)
from models.recs.ranker import CANDIDATE_FEATURES, feature_matrix
from serving.config import ServingSettings

ITEM_VIEW = definitions.item_stats_fv.name
USER_VIEWS = frozenset({definitions.user_stats_fv.name, definitions.user_item_stats_fv.name})
USER_PRESENCE = "user_frequency"
"""A user feature every materialized user has: all missing means the store lacks the user."""
POPULAR = "popular"
ITEM_BATCH = 1000
CANDIDATE_BATCH = 500
"""Users per `generate_candidates` call when filling the table (bounds its dense blocks)."""

logger = logging.getLogger(__name__)


class ReloadError(RuntimeError):
    """The champion could not be (re)loaded; the previous snapshot keeps serving."""


@dataclass(frozen=True)
class ScoredItem:
    item_id: str
    score: float
    source: str


@dataclass(frozen=True)
class Recommendation:
    items: list[ScoredItem]
    model_version: str | None
    fallback: bool


@dataclass(frozen=True)
class Status:
    """Readiness: a model and the feature store are loaded, or why not."""

    ready: bool
    reason: str | None
    model_version: str | None
    feature_store: str
    items: int
    item_features_until: datetime | None


@dataclass(frozen=True)
class Catalog:
    """The items the service may return, with their categories."""

    categories: pd.Series
    ids: frozenset[str]

    @classmethod
    def read(cls, path: Path) -> "Catalog":
        frame = read_catalog(path).drop_duplicates("item_id", keep="last")
        categories = frame.set_index("item_id")["category"]
        return cls(categories, frozenset(categories.index))


@dataclass(frozen=True)
class Popularity:
    """Catalog items in the popular source's order (distinct buyers over its window before
    the cutoff), then the other items bought before the cutoff by all-time distinct buyers,
    scored strictly below the popular source's last item (so a category filter still finds
    `k` items)."""

    items: tuple[str, ...]
    scores: tuple[float, ...]
    categories: tuple[str, ...]

    @classmethod
    def rank(cls, recent: pd.Series, all_time: pd.Series, catalog: Catalog) -> "Popularity":
        head = recent[recent > 0].sort_index().sort_values(ascending=False, kind="stable")
        tail = all_time[~all_time.index.isin(head.index)].sort_index()
        tail = tail.sort_values(ascending=False, kind="stable").astype(float)
        if len(head) and len(tail):
            tail = tail / (tail.max() + 1) * float(head.iloc[-1])
        ranked = pd.concat([head.astype(float), tail])
        ranked = ranked[ranked.index.isin(catalog.ids)]
        return cls(tuple(ranked.index), tuple(ranked.to_numpy(dtype=float)),
                   tuple(catalog.categories.reindex(ranked.index)))

    @classmethod
    def from_sources(cls, sources: dict, catalog: Catalog) -> "Popularity":
        """From a candidate state: its popular source, then its purchase pairs."""
        pairs = sources["repurchase"].scores
        return cls.rank(sources[POPULAR].ranking, pairs.groupby("item_id")["user_id"].nunique(),
                        catalog)

    @classmethod
    def from_events(cls, events: pd.DataFrame, catalog: Catalog) -> "Popularity":
        """From the event log, as a candidate state fitted at the log's end would rank it."""
        if events.empty:
            return cls((), (), ())
        cutoff = events["ts"].max().ceil("D")
        purchases = purchases_before(events, cutoff)
        recent = PopularSource().fit(purchases, cutoff, CandidateConfig()).ranking
        return cls.rank(recent, purchases.groupby("item_id")["user_id"].nunique(), catalog)

    def top(self, k: int, category: str | None = None,
            exclude: Collection[str] = ()) -> list[tuple[str, float]]:
        chosen = []
        for item, score, item_category in zip(self.items, self.scores, self.categories,
                                              strict=True):
            if item in exclude or (category is not None and item_category != category):
                continue
            chosen.append((item, score))
            if len(chosen) == k:
                break
        return chosen


class CandidateTable:
    """The candidates of every user a candidate state knows, generated once, kept to the
    catalog's items and grouped by user, as aligned columns: `item_id`, its `category`, the
    `source` that proposed it and the candidate features (floats)."""

    def __init__(self, sources: dict, catalog: Catalog):
        users = sorted(users_with_history(sources))
        parts = [generate_candidates(sources, users[start:start + CANDIDATE_BATCH])
                 for start in range(0, len(users), CANDIDATE_BATCH)]
        frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
            columns=["user_id", "item_id"])
        frame = frame[frame["item_id"].isin(catalog.ids)].reset_index(drop=True)
        owners = frame["user_id"].to_numpy()
        starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]]) if len(owners) else []
        stops = [*starts[1:], len(owners)]
        self._rows = {owners[start]: (start, stop)
                      for start, stop in zip(starts, stops, strict=True)}
        features = frame.reindex(columns=CANDIDATE_FEATURES).to_numpy(dtype=float,
                                                                      na_value=np.nan)
        self._columns = {
            "item_id": frame["item_id"].to_numpy(dtype=object),
            "category": frame["item_id"].map(catalog.categories).to_numpy(dtype=object),
            "source": proposing_source(frame).fillna(POPULAR).to_numpy(dtype=object),
            **dict(zip(CANDIDATE_FEATURES, features.T.copy(), strict=True)),
        }

    def __contains__(self, user_id: str) -> bool:
        return user_id in self._rows

    @property
    def users(self) -> list[str]:
        return list(self._rows)

    def of(self, user_id: str) -> dict[str, np.ndarray]:
        """The user's candidate rows (none for a user the state does not know)."""
        start, stop = self._rows.get(user_id, (0, 0))
        return {name: column[start:stop] for name, column in self._columns.items()}


def with_popular(candidates: dict[str, np.ndarray], items: list[str], repeat_rate: pd.Series,
                 categories: pd.Series) -> dict[str, np.ndarray]:
    """Candidate columns with popular `items` appended: proposed by no source (`source`
    popular), with their category and repeat rate."""
    added = {"item_id": np.asarray(items, dtype=object),
             "category": categories.reindex(items).to_numpy(dtype=object),
             "source": np.full(len(items), POPULAR, dtype=object),
             "n_sources": np.zeros(len(items)),
             "item_repeat_rate": repeat_rate.reindex(items).fillna(0.0).to_numpy(dtype=float)}
    return {name: np.concatenate([column, added.get(name, np.full(len(items), np.nan))])
            for name, column in candidates.items()}


class ItemFeatureCache:
    """Item features of every catalog item, read in bulk and re-read (in a background thread;
    requests keep the previous values meanwhile) when the registry records a new
    materialization, checked at most every `poll` seconds."""

    def __init__(self, read: Callable[[list[str]], pd.DataFrame], item_ids: list[str],
                 version: Callable[[], object], poll: float):
        self._read = read
        self._item_ids = item_ids
        self._version = version
        self._poll = poll
        self.loaded_version = version()
        self._keep(read(item_ids))
        self._checked_at = time.monotonic()
        self._refreshing = threading.Lock()

    def _keep(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        """The cached features, one row per item id."""
        # Columns with a NaN row after the items' (where unknown ids point), in one
        # reference that a refresh swaps whole.
        self._columns = ({item: row for row, item in enumerate(frame.index)},
                         {name: np.append(frame[name].to_numpy(dtype=float, na_value=np.nan),
                                          np.nan) for name in frame.columns})

    def lookup(self, item_ids: list[str]) -> dict[str, np.ndarray]:
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


@dataclass(frozen=True)
class Snapshot:
    """Everything one request reads, swapped as a whole."""

    model: RegisteredRanker | None
    model_problem: str | None
    catalog: Catalog
    candidates: CandidateTable | None
    popularity: Popularity
    item_features: ItemFeatureCache | None
    store_problem: str | None


def settle_heap() -> None:
    """Take what is loaded now out of the collector's full passes (`gc.freeze`): scanning the
    candidate state and caches on every full collection paused requests for hundreds of
    milliseconds. Unfreezing first lets a collection free what a reload left behind."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class Recommender:
    """The recommendations of one worker: loads once, answers, reloads on demand."""

    def __init__(self, settings: Settings, options: ServingSettings):
        self.settings = settings
        self.options = options
        self.feature_store_kind = "redis" if settings.redis_url else "sqlite"
        self._snapshot: Snapshot | None = None
        self._reload_lock = threading.Lock()
        # Feast shares one SQLite connection between threads: one reader at a time.
        self._store_lock: AbstractContextManager = (
            nullcontext() if settings.redis_url else threading.Lock())
        self._reader: ServiceReader | None = None

    # Loading ---------------------------------------------------------------------------

    def load(self) -> None:
        """Load the champion, the catalog and the store; whatever fails leaves a reason
        (readiness reports it) and the popularity fallback answering."""
        with self._reload_lock:
            try:
                model = self._champion(None)
                problem = None if model else f"no `{registry.CHAMPION}` {MODEL_NAME} is registered"
            except Exception as exc:
                logger.exception("loading the champion failed")
                model, problem = None, f"the champion could not be loaded: {exc}"
            self._snapshot = self._assemble(model, problem)
            settle_heap()
            logger.info("serving %s version %s", MODEL_NAME, model.version if model else None)

    def reload(self) -> tuple[str | None, str | None]:
        """Re-read the champion and swap it in; returns (previous, current) versions. Raises
        `ReloadError` (the previous snapshot keeps serving) when there is nothing to load."""
        with self._reload_lock:
            previous = self._current()
            old = previous.model.version if previous.model else None
            try:
                model = self._champion(previous.model)
                snapshot = self._assemble(model, None) if model else None
            except Exception as exc:
                logger.exception("reloading failed; still serving version %s", old)
                raise ReloadError(f"the champion could not be loaded: {exc}; "
                                  f"still serving version {old}") from exc
            if model is None:
                raise ReloadError(f"no `{registry.CHAMPION}` {MODEL_NAME} is registered; "
                                  f"still serving version {old}")
            if snapshot.store_problem and previous.store_problem is None:
                raise ReloadError(f"{snapshot.store_problem}; still serving version {old}")
            self._snapshot = snapshot
            settle_heap()
            logger.info("reloaded %s: version %s -> %s", MODEL_NAME, old, model.version)
            return old, model.version

    def _champion(self, current: RegisteredRanker | None) -> RegisteredRanker | None:
        registry.configure(self.settings)
        version = registry.champion(MODEL_NAME)
        if version is None:
            return None
        if current and current.version == str(version.version):
            return current
        return load_ranker(version)

    def _assemble(self, model: RegisteredRanker | None, model_problem: str | None) -> Snapshot:
        catalog = Catalog.read(self.settings.catalog_path)
        candidates = None
        if model is not None:
            popularity = Popularity.from_sources(model.sources, catalog)
            candidates = CandidateTable(model.sources, catalog)
        else:
            popularity = Popularity.from_events(EventLog(self.settings.events_dir).read(),
                                                catalog)
        item_features, store_problem = None, None
        try:
            reader = self._connect_store()
            item_features = ItemFeatureCache(
                self._read_item_features, sorted(catalog.ids),
                lambda: materializations(reader.store, ITEM_VIEW),
                self.options.materialization_poll_seconds)
        except Exception as exc:
            logger.exception("the feature store is unavailable")
            store_problem = f"the feature store is unavailable: {exc}"
        return Snapshot(model, model_problem, catalog, candidates, popularity, item_features,
                        store_problem)

    def _connect_store(self) -> ServiceReader:
        if self._reader is None:
            self._reader = ServiceReader(feature_store(self.settings),
                                         definitions.RECS_RANKER_SERVICE)
        return self._reader

    def _read_item_features(self, item_ids: list[str]) -> pd.DataFrame:
        names = self._reader.views[ITEM_VIEW].names
        parts = []
        for start in range(0, len(item_ids), ITEM_BATCH):
            with self._store_lock:
                values = self._reader.read({"item_id": item_ids[start:start + ITEM_BATCH]},
                                           skip=USER_VIEWS)
            parts.append(values.set_index("item_id")[names])
        if not parts:
            return pd.DataFrame(columns=names, index=pd.Index([], name="item_id"), dtype=float)
        return pd.concat(parts)

    def _current(self) -> Snapshot:
        if self._snapshot is None:
            raise RuntimeError("the recommender is not loaded (the app's lifespan loads it)")
        return self._snapshot

    # Answering -------------------------------------------------------------------------

    def status(self) -> Status:
        snapshot = self._current()
        reason = snapshot.model_problem or snapshot.store_problem
        version = snapshot.model.version if snapshot.model else None
        cache = snapshot.item_features
        until = cache.loaded_version[-1][1] if cache and cache.loaded_version else None
        return Status(reason is None, reason, version, self.feature_store_kind,
                      len(snapshot.catalog.ids), until)

    def as_of(self, model: RegisteredRanker) -> datetime:
        """The instant recency features are computed for (see `ServingSettings.clock`)."""
        clock = self.options.clock
        if isinstance(clock, datetime):
            return clock
        if clock == "model" and model.cutoff is not None:
            return model.cutoff
        return datetime.now(UTC)

    def recommend(self, user_id: str, k: int, category: str | None = None,
                  exclude: Collection[str] = frozenset()) -> Recommendation:
        """The user's top `k` catalog items, personalised when possible; never raises for
        a missing model, user or feature (the popularity fallback answers then)."""
        snapshot = self._current()
        model = snapshot.model
        exclude = frozenset(exclude)
        if (model is not None and snapshot.item_features is not None
                and user_id in snapshot.candidates):
            try:
                items = self._personalised(snapshot, model, user_id, k, category, exclude)
            except Exception:
                logger.exception("ranking failed for user %s; answering with popularity",
                                 user_id)
            else:
                if items is not None:
                    return Recommendation(items, model.version, fallback=False)
        popular = snapshot.popularity.top(k, category, exclude)
        return Recommendation([ScoredItem(item, score, POPULAR) for item, score in popular],
                              model.version if model else None, fallback=True)

    def _personalised(self, snapshot: Snapshot, model: RegisteredRanker, user_id: str, k: int,
                      category: str | None, exclude: frozenset[str]) -> list[ScoredItem] | None:
        candidates = snapshot.candidates.of(user_id)
        keep = np.ones(len(candidates["item_id"]), dtype=bool)
        if exclude:
            keep &= [item not in exclude for item in candidates["item_id"]]
        if category is not None:
            keep &= candidates["category"] == category
        if not keep.all():
            candidates = {name: column[keep] for name, column in candidates.items()}
        if len(candidates["item_id"]) < k:  # the filters left too few: popular items that pass
            taken = exclude | set(candidates["item_id"])
            extra = snapshot.popularity.top(k - len(candidates["item_id"]), category, taken)
            candidates = with_popular(candidates, [item for item, _ in extra],
                                      model.sources["repurchase"].item_repeat_rate,
                                      snapshot.catalog.categories)
        if not len(candidates["item_id"]):
            return None
        item_ids = candidates["item_id"].tolist()
        with self._store_lock:
            online = self._reader.read_columns({"user_id": user_id, "item_id": item_ids},
                                               {"as_of": self.as_of(model)}, skip=(ITEM_VIEW,))
        if np.isnan(online[USER_PRESENCE]).all():
            logger.info("no online features for user %s; answering with popularity", user_id)
            return None
        rows = ChainMap(online, snapshot.item_features.lookup(item_ids), candidates)
        features = feature_matrix(rows, candidates["category"])
        scores = model.booster.predict(features, num_threads=1)
        top = np.lexsort((candidates["item_id"], -scores))[:k]  # ties: by id
        return [ScoredItem(item_ids[row], float(scores[row]), candidates["source"][row])
                for row in top]
