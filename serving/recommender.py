"""Recommendations at request time: candidates, online features, the ranker, the fallback.

One `Recommender` per worker process. Everything a request reads is in an immutable
`Snapshot` (the champion with its candidate state, the catalog, the popularity ranking and
the item-feature cache), picked up once per request: a reload builds the next snapshot to
the side and swaps one reference, so a request sees the old model or the new one, never a
mix, and the old one keeps answering until the new one is fully loaded.

Personalised path: the candidate sources of the champion's run propose items for the user;
items outside the catalog, excluded or of another category are dropped (and popular items
passing the same filters fill up to `k`); user and user x item features come from the online
store through Feast (the `recs_ranker_v1` views minus the item ones, with the recency view
computed for `as_of`), item features from the in-process cache; `ranking_features` and the
booster order them. Anything missing on the way answers with the popularity fallback.
"""

import gc
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import lightgbm as lgb
import mlflow
import pandas as pd
from feast import FeatureStore
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from features.event_log import EventLog
from features.feature_repo import definitions
from features.ingest import read_catalog
from features.settings import Settings
from features.store import feature_store
from models import registry
from models.candidates import (
    CandidateConfig,
    PopularSource,
    generate_candidates,
    purchases_before,
)
from models.ranker import FEATURE_COLUMNS, ranking_features
from models.recommender import (
    CANDIDATE_STATE_ARTIFACT,
    CUTOFF_PARAM,
    MODEL_NAME,
    load_candidate_state,
    proposing_source,
    users_with_history,
)
from serving.config import ServingSettings

FEATURE_SERVICE = "recs_ranker_v1"
ITEM_VIEWS = frozenset({definitions.item_stats_fv.name})
USER_PRESENCE = "user_frequency"
"""A user feature every materialized user has: all missing means the store lacks the user."""
POPULAR = "popular"
ITEM_BATCH = 1000

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


@dataclass(frozen=True)
class RankerModel:
    """A registered `recs-ranker` version with its run's candidate sources."""

    version: str
    run_id: str
    booster: lgb.Booster
    sources: dict
    cutoff: datetime | None
    users: frozenset[str]


def load_model_version(version: ModelVersion) -> RankerModel:
    """Load a registered version: booster, candidate state and candidate cutoff. Pinned to
    the version number, so the alias moving meanwhile cannot mix two runs."""
    booster = mlflow.lightgbm.load_model(f"models:/{MODEL_NAME}/{version.version}")
    if booster.feature_name() != list(FEATURE_COLUMNS):
        raise ReloadError(f"{MODEL_NAME} version {version.version} was trained on other "
                          "features than this service computes")
    with tempfile.TemporaryDirectory() as workdir:
        path = mlflow.artifacts.download_artifacts(
            run_id=version.run_id, artifact_path=CANDIDATE_STATE_ARTIFACT, dst_path=workdir)
        sources = load_candidate_state(Path(path))
    until = MlflowClient().get_run(version.run_id).data.params.get(CUTOFF_PARAM)
    cutoff = None
    if until:
        stamp = pd.Timestamp(until)
        cutoff = (stamp.tz_localize(UTC) if stamp.tz is None else stamp.tz_convert(UTC))
        cutoff = cutoff.to_pydatetime()
    return RankerModel(str(version.version), version.run_id, booster, sources, cutoff,
                       users_with_history(sources))


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


class ItemFeatureCache:
    """Item features of every catalog item, read in bulk and re-read after `ttl` seconds in
    a background thread (requests keep using the previous values meanwhile)."""

    def __init__(self, read: Callable[[list[str]], pd.DataFrame], item_ids: list[str],
                 ttl: float):
        self._read = read
        self._item_ids = item_ids
        self._ttl = ttl
        self._frame = read(item_ids)
        self._loaded_at = time.monotonic()
        self._refreshing = threading.Lock()

    def lookup(self, item_ids: list[str]) -> pd.DataFrame:
        """One row per id, in order (NaN where the store has no features for the item)."""
        stale = time.monotonic() - self._loaded_at > self._ttl
        if stale and self._refreshing.acquire(blocking=False):
            threading.Thread(target=self._refresh, name="item-features", daemon=True).start()
        return self._frame.reindex(item_ids)

    def _refresh(self) -> None:
        try:
            self._frame = self._read(self._item_ids)
        except Exception:
            logger.exception("refreshing cached item features failed; keeping the old ones")
        finally:
            self._loaded_at = time.monotonic()
            self._refreshing.release()


@dataclass(frozen=True)
class Snapshot:
    """Everything one request reads, swapped as a whole."""

    model: RankerModel | None
    model_problem: str | None
    catalog: Catalog
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
        self._store: FeatureStore | None = None
        self._user_refs: list[str] = []
        self._item_refs: list[str] = []

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

    def _champion(self, current: RankerModel | None) -> RankerModel | None:
        registry.configure(self.settings)
        version = registry.champion(MODEL_NAME)
        if version is None:
            return None
        if current and current.version == str(version.version):
            return current
        return load_model_version(version)

    def _assemble(self, model: RankerModel | None, model_problem: str | None) -> Snapshot:
        catalog = Catalog.read(self.settings.catalog_path)
        if model is not None:
            popularity = Popularity.from_sources(model.sources, catalog)
        else:
            popularity = Popularity.from_events(EventLog(self.settings.events_dir).read(),
                                                catalog)
        item_features, store_problem = None, None
        try:
            self._connect_store()
            item_features = ItemFeatureCache(self._read_item_features, sorted(catalog.ids),
                                             self.options.item_cache_ttl_seconds)
        except Exception as exc:
            logger.exception("the feature store is unavailable")
            store_problem = f"the feature store is unavailable: {exc}"
        return Snapshot(model, model_problem, catalog, popularity, item_features, store_problem)

    def _connect_store(self) -> None:
        if self._store is not None:
            return
        store = feature_store(self.settings)
        service = store.get_feature_service(FEATURE_SERVICE)
        refs = {view: [f"{view}:{feature.name}" for feature in projection.features]
                for projection in service.feature_view_projections
                for view in [projection.name_to_use()]}
        self._user_refs = [ref for view, group in refs.items() if view not in ITEM_VIEWS
                           for ref in group]
        self._item_refs = [ref for view, group in refs.items() if view in ITEM_VIEWS
                           for ref in group]
        self._store = store

    def _read_item_features(self, item_ids: list[str]) -> pd.DataFrame:
        names = [ref.split(":", 1)[1] for ref in self._item_refs]
        parts = []
        for start in range(0, len(item_ids), ITEM_BATCH):
            rows = [{"item_id": item} for item in item_ids[start:start + ITEM_BATCH]]
            with self._store_lock:
                values = self._store.get_online_features(features=self._item_refs,
                                                         entity_rows=rows).to_dict()
            parts.append(pd.DataFrame(values).set_index("item_id")[names].astype(float))
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
        return Status(reason is None, reason, version, self.feature_store_kind,
                      len(snapshot.catalog.ids))

    def as_of(self, model: RankerModel) -> datetime:
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
        if model is not None and snapshot.item_features is not None and user_id in model.users:
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

    def _personalised(self, snapshot: Snapshot, model: RankerModel, user_id: str, k: int,
                      category: str | None, exclude: frozenset[str]) -> list[ScoredItem] | None:
        candidates = generate_candidates(model.sources, [user_id])
        items = candidates["item_id"]
        keep = items.isin(snapshot.catalog.ids) & ~items.isin(exclude)
        if category is not None:
            keep &= items.map(snapshot.catalog.categories) == category
        candidates = candidates[keep].reset_index(drop=True)
        if len(candidates) < k:  # the filters left too few: popular items that pass them
            taken = exclude | set(candidates["item_id"])
            extra = [item for item, _ in snapshot.popularity.top(k - len(candidates), category,
                                                                 taken)]
            repeat_rate = model.sources["repurchase"].item_repeat_rate
            candidates = pd.concat([candidates, pd.DataFrame({
                "user_id": user_id, "item_id": extra, "n_sources": 0,
                "item_repeat_rate": pd.Series(extra, dtype=object).map(repeat_rate).fillna(0.0),
            })], ignore_index=True)
        if candidates.empty:
            return None
        item_ids = candidates["item_id"].tolist()
        online = self._user_features(user_id, item_ids, self.as_of(model))
        if online[USER_PRESENCE].isna().all():
            logger.info("no online features for user %s; answering with popularity", user_id)
            return None
        examples = pd.concat([
            candidates,
            online.drop(columns=["user_id", "item_id"]),
            snapshot.item_features.lookup(item_ids).reset_index(drop=True),
        ], axis=1)
        features = ranking_features(examples, snapshot.catalog.categories)
        scores = model.booster.predict(features, num_threads=1)
        ranked = pd.DataFrame({"item_id": item_ids, "score": scores,
                               "source": proposing_source(candidates).fillna(POPULAR)})
        ranked = ranked.sort_values(["score", "item_id"], ascending=[False, True]).head(k)
        return [ScoredItem(item, float(score), source)
                for item, score, source in ranked.itertuples(index=False)]

    def _user_features(self, user_id: str, item_ids: list[str], as_of: datetime):
        """User and user x item features (and the recency view) of each candidate, in order."""
        rows = [{"user_id": user_id, "item_id": item, "as_of": as_of} for item in item_ids]
        with self._store_lock:
            values = self._store.get_online_features(features=self._user_refs,
                                                     entity_rows=rows).to_dict()
        return pd.DataFrame(values)
