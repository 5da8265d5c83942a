"""Loading: everything a recommendation request reads, assembled once into an immutable
`Snapshot` from the champion `recs-ranker` (`models.recs.artifacts.load_ranker`), the
catalog file, the event log (popularity without a model) and the Feast online store. The
item side (catalog, item features) refreshes in `ItemFeatureCache`; candidates generated
per request for users with new purchases are kept in the ranking's `UserCandidates`.

Inputs: `Settings` (catalog, events, registry, store), `ServingSettings` (poll interval).
Outputs: a `Snapshot`; what failed to load is recorded as a reason (`model_problem`,
`store_problem`), never raised, so the popularity fallback can always answer. `ranking` is
set only when everything the personalised path needs loaded.
"""

import logging
import threading
from collections.abc import Collection, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import numpy as np
import pandas as pd

from features.event_log import EventLog
from features.feature_repo import definitions
from features.online import EntityRows, ServiceReader
from features.settings import Settings
from features.store import feature_store, materializations, online_store_kind
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
from models.recs.ranker import CANDIDATE_FEATURES
from serving import observability
from serving.config import ServingSettings
from serving.recs.caches import Catalog, Columns, ItemFeatureCache, ResultCache, UserCandidates

ITEM_VIEW = definitions.item_stats_fv.name
USER_VIEW = definitions.user_stats_fv.name
PAIR_VIEW = definitions.user_item_stats_fv.name
USER_VIEWS = frozenset({USER_VIEW, PAIR_VIEW})
POPULAR: Final = "popular"
ITEM_BATCH = 1000
STORE_TIMEOUT_SECONDS = 0.25
"""A Redis call on the request path not answered by then fails, untried again (a healthy
store answers in under a millisecond; the event loop waits on it)."""
"""Items per online-store read when filling the item-feature cache."""
CANDIDATE_BATCH = 500
"""Users per `generate_candidates` call when filling the table (bounds its dense blocks)."""
FRESH_USERS = 5_000
"""Users whose generated candidates are kept per worker (about 30 kB each: 150 MB at most);
regenerating an evicted user's takes about 10 ms."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Popularity:
    """Items in the popular source's order (distinct buyers over its window before the
    cutoff), then the other items bought before the cutoff by all-time distinct buyers,
    scored strictly below the popular source's last item (so a category filter still finds
    `k` items). `top` keeps to the catalog it is given."""

    items: tuple[str, ...]
    scores: tuple[float, ...]

    @classmethod
    def rank(cls, recent: pd.Series, all_time: pd.Series) -> "Popularity":
        head = recent[recent > 0].sort_index().sort_values(ascending=False, kind="stable")
        tail = all_time[~all_time.index.isin(head.index)].sort_index()
        tail = tail.sort_values(ascending=False, kind="stable").astype(float)
        if len(head) and len(tail):
            tail = tail / (tail.max() + 1) * float(head.iloc[-1])
        ranked = pd.concat([head.astype(float), tail])
        return cls(tuple(ranked.index), tuple(ranked.to_numpy(dtype=float)))

    @classmethod
    def from_sources(cls, sources: dict) -> "Popularity":
        """From a candidate state: its popular source, then its purchase pairs."""
        pairs = sources["repurchase"].scores
        return cls.rank(sources[POPULAR].ranking, pairs.groupby("item_id")["user_id"].nunique())

    @classmethod
    def from_events(cls, events: pd.DataFrame) -> "Popularity":
        """From the event log, as a candidate state fitted at the log's end would rank it."""
        if events.empty:
            return cls((), ())
        cutoff = events["ts"].max().ceil("D")
        purchases = purchases_before(events, cutoff)
        recent = PopularSource().fit(purchases, cutoff, CandidateConfig()).ranking
        return cls.rank(recent, purchases.groupby("item_id")["user_id"].nunique())

    def top(self, k: int, catalog: Catalog, category: str | None = None,
            exclude: Collection[str] = ()) -> list[tuple[str, float]]:
        """The `k` most popular items of `catalog` (of `category`, not in `exclude`)."""
        chosen = []
        category_of = catalog.category_of
        for item, score in zip(self.items, self.scores, strict=True):
            if item in exclude or item not in category_of or (
                    category is not None and category_of[item] != category):
                continue
            chosen.append((item, score))
            if len(chosen) == k:
                break
        return chosen


def candidate_columns(frame: pd.DataFrame, catalog: Catalog) -> Columns:
    """`generate_candidates` rows (of the catalog's items) as aligned columns: `item_id`,
    its `category`, the `source` that proposed it and the candidate features (floats)."""
    features = frame.reindex(columns=CANDIDATE_FEATURES).to_numpy(dtype=float,
                                                                  na_value=np.nan)
    return {
        "item_id": frame["item_id"].to_numpy(dtype=object),
        "category": frame["item_id"].map(catalog.category_of).to_numpy(dtype=object),
        "source": proposing_source(frame).fillna(POPULAR).to_numpy(dtype=object),
        **dict(zip(CANDIDATE_FEATURES, features.T.copy(), strict=True)),
    }


class CandidateTable:
    """The candidates of every user a candidate state knows, generated once, kept to the
    `catalog`'s items and grouped by user, as `candidate_columns`."""

    def __init__(self, sources: dict, catalog: Catalog):
        self.catalog = catalog
        users = sorted(users_with_history(sources))
        parts = [generate_candidates(sources, users[start:start + CANDIDATE_BATCH])
                 for start in range(0, len(users), CANDIDATE_BATCH)]
        frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
            columns=["user_id", "item_id"])
        frame = frame[frame["item_id"].isin(catalog.ids)].reset_index(drop=True)
        owners = frame["user_id"].to_numpy()
        starts = (np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]]) if len(owners)
                  else np.empty(0, dtype=np.intp))
        stops = [*starts[1:], len(owners)]
        self._rows = {owners[start]: (start, stop)
                      for start, stop in zip(starts, stops, strict=True)}
        self._columns = candidate_columns(frame, catalog)

    def __contains__(self, user_id: str) -> bool:
        return user_id in self._rows

    @property
    def users(self) -> list[str]:
        return list(self._rows)

    def of(self, user_id: str, catalog: Catalog | None = None) -> Columns:
        """The user's candidate rows (none for a user the state does not know), kept to
        `catalog`'s items with its categories when it is not the table's."""
        start, stop = self._rows.get(user_id, (0, 0))
        columns = {name: column[start:stop] for name, column in self._columns.items()}
        if catalog is None or catalog is self.catalog:
            return columns
        keep = np.fromiter((item in catalog.ids for item in columns["item_id"]), dtype=bool,
                           count=stop - start)
        columns = {name: column[keep] for name, column in columns.items()}
        columns["category"] = np.array([catalog.category_of[item]
                                        for item in columns["item_id"]], dtype=object)
        return columns


class OnlineStore:
    """The Feast online store of the `recs_ranker_v1` feature service, read under the lock
    its backend needs (Feast shares one SQLite connection between threads: one reader at a
    time; Redis needs none); every read timed (`serving.observability.store_read`)."""

    def __init__(self, settings: Settings):
        self.reader = ServiceReader(feature_store(settings, STORE_TIMEOUT_SECONDS),
                                    definitions.RECS_RANKER_SERVICE)
        self._lock: AbstractContextManager[Any] = (
            nullcontext() if online_store_kind(settings) != "sqlite" else threading.Lock())

    def item_features(self, item_ids: list[str]) -> pd.DataFrame:
        """The item view's features of the items, one row per item id, read in batches."""
        names = self.reader.views[ITEM_VIEW].names
        parts = []
        for start in range(0, len(item_ids), ITEM_BATCH):
            with observability.store_read("item_features"), self._lock:
                values = self.reader.read({"item_id": item_ids[start:start + ITEM_BATCH]},
                                          skip=USER_VIEWS)
            parts.append(values.set_index("item_id")[names])
        if not parts:
            return pd.DataFrame(columns=names, index=pd.Index([], name="item_id"), dtype=float)
        return pd.concat(parts)

    def user(self, user_id: str) -> EntityRows:
        """The user's rows, read now: the stats, and the pair index when the stats exist."""
        rows = self.reader.entity({"user_id": user_id})
        with observability.store_read("user"), self._lock:
            if rows.has(USER_VIEW):
                rows.has(PAIR_VIEW)
        return rows

    def request_features(self, user: EntityRows, item_ids: list[str],
                         context: Mapping[str, datetime]) -> Columns:
        """User and user x item features (the item view skipped: the cache has it), with the
        on-demand views computed for `context` (`as_of`), from the `user`'s rows."""
        with observability.store_read("request_features"), self._lock:
            return self.reader.read_columns({**user.keys, "item_id": item_ids}, context,
                                            skip=(ITEM_VIEW,), entity=user)

    def materializations(self) -> tuple:
        """The item view's materialization intervals (changes when it is re-materialized)."""
        return materializations(self.reader.store, ITEM_VIEW)


@dataclass(frozen=True)
class Ranking:
    """What the personalised path needs; exists only when all of it loaded. `fresh` keeps
    the candidates generated for users with purchases the candidate state lacks, `results`
    the users' ranked lists."""

    model: RegisteredRanker
    candidates: CandidateTable
    store: OnlineStore
    item_features: ItemFeatureCache
    fresh: UserCandidates
    results: ResultCache


@dataclass(frozen=True)
class Snapshot:
    """Everything one request reads, swapped as a whole (but the item side, which
    `item_features` refreshes in place)."""

    model: RegisteredRanker | None
    model_problem: str | None
    loaded_catalog: Catalog
    popularity: Popularity
    item_features: ItemFeatureCache | None
    store_problem: str | None
    ranking: Ranking | None

    @property
    def catalog(self) -> Catalog:
        """The current catalog: the item cache's (re-read when the file changes), else the
        one loaded."""
        return self.item_features.catalog if self.item_features else self.loaded_catalog


def champion(settings: Settings, current: RegisteredRanker | None) -> RegisteredRanker | None:
    """The registered `champion` ranker (`current` again when it is the same version); None
    when none is registered."""
    registry.configure(settings)
    version = registry.champion(MODEL_NAME)
    if version is None:
        return None
    if current and current.version == str(version.version):
        return current
    return load_ranker(version, compiled_dir=settings.data_dir / "compiled")


def assemble(settings: Settings, options: ServingSettings, model: RegisteredRanker | None,
             model_problem: str | None, connect: "StoreConnector") -> Snapshot:
    """A snapshot around `model` (None: popularity from the event log only); `connect`
    opens (or returns the already open) online store."""
    catalog = Catalog.read(settings.catalog_path)
    candidates = None
    if model is not None:
        popularity = Popularity.from_sources(model.sources)
        candidates = CandidateTable(model.sources, catalog)
    else:
        popularity = Popularity.from_events(EventLog(settings.events_dir).read())
    item_features, store_problem, ranking = None, None, None
    try:
        store = connect()
        item_features = ItemFeatureCache(store.item_features, catalog, store.materializations,
                                         options.materialization_poll_seconds)
    except Exception as exc:
        logger.exception("the feature store is unavailable")
        store_problem = f"the feature store is unavailable: {exc}"
    else:
        if model is not None and candidates is not None:
            ranking = Ranking(model, candidates, store, item_features,
                              UserCandidates(FRESH_USERS),
                              ResultCache(options.result_cache_users, options.result_ttl_seconds))
    return Snapshot(model, model_problem, catalog, popularity, item_features, store_problem,
                    ranking)


class StoreConnector:
    """Opens the online store on first use and keeps it (a failed open is retried on the
    next call)."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._store: OnlineStore | None = None

    def __call__(self) -> OnlineStore:
        if self._store is None:
            self._store = OnlineStore(self._settings)
        return self._store
