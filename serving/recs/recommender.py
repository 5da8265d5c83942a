"""The request path: one `Recommender` per worker answers from the current `Snapshot`.

A request picks the snapshot up once; a reload assembles the next one to the side and swaps
one reference, so a request sees the old model or the new one, never a mix, and the old one
keeps answering until the new one is fully loaded (or for good, when loading fails).

Personalised path (`Snapshot.ranking` loaded, the user has online features): the user's
ranked list comes from the result cache (in process, then shared through Redis), or is
scored now: the user's rows are read once (stats and pair index); the user's candidates (the
precomputed table's, or generated from the online history when it holds purchases the
candidate state lacks: `serving.recs.fresh`); user and user x item features from the user's
rows, item features from the cache; `feature_matrix` and the booster score them all; ties by
item id. Excluded items and other categories are then dropped from the list, and popular
items passing the same filters, scored the same way, top it up to `k`. Anything missing on
the way (no model, no online features for the user, an error) answers with the popularity
fallback: `recommend` never raises for those.

Requests also follow the stream consumer's change notices (`features.changes`, at most every
`changes_poll_seconds`): a user named there loses the cached list, an item is re-read.

`recommend` runs on the event loop (see `serving.routes.recommendations`): its store reads
are bounded (`STORE_TIMEOUT_SECONDS`), and after `BREAKER.failure_threshold` failed or slow
personalised answers in a row the popularity fallback answers alone for
`BREAKER.open_seconds` (then one personalised try), so a store outage neither stalls the
worker nor logs a stack trace per request.
"""

import logging
import threading
import time
from collections import ChainMap
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import pandas as pd
import redis

from db.channels import BreakerSettings
from features.changes import ChangeFeed, cursor_order, open_changes
from features.online import EntityRows
from features.settings import Settings
from features.store import online_store_kind
from models import registry
from models.recs.artifacts import MODEL_NAME, RegisteredRanker
from models.recs.ranker import feature_matrix
from serving import observability
from serving.channels.breaker import CircuitBreaker
from serving.channels.clock import SystemClock
from serving.config import ServingSettings
from serving.recs.caches import Columns, RankedList, SharedResults, settle_heap
from serving.recs.fresh import OnlineHistory, user_candidates
from serving.recs.snapshot import (
    POPULAR,
    STORE_TIMEOUT_SECONDS,
    Ranking,
    Snapshot,
    StoreConnector,
    assemble,
    champion,
)
from serving.schemas import FeatureStoreKind, Source

logger = logging.getLogger(__name__)

BREAKER = BreakerSettings(failure_threshold=3, slow_call_seconds=0.5, open_seconds=5.0)
"""When the personalised path stops being tried for a while: failures and slow answers."""
NOTICED_USERS = 100_000
"""Users whose latest change notice a worker remembers (then it forgets them all)."""


class ReloadError(RuntimeError):
    """The champion could not be (re)loaded; the previous snapshot keeps serving."""


@dataclass(frozen=True)
class ScoredItem:
    item_id: str
    score: float
    source: Source


@dataclass(frozen=True)
class Recommendation:
    items: list[ScoredItem]
    model_version: str | None
    fallback: bool


@dataclass(frozen=True)
class Status:
    """Readiness: a model and the feature store are loaded (`reason` None), or why not."""

    reason: str | None
    model_version: str | None
    feature_store: FeatureStoreKind
    items: int
    item_features_until: datetime | None

    @property
    def ready(self) -> bool:
        return self.reason is None


def with_popular(candidates: Columns, items: list[str], repeat_rate: pd.Series,
                 categories: dict[str, str]) -> Columns:
    """Candidate columns with popular `items` appended: proposed by no source (`source`
    popular), with their category and repeat rate."""
    added = {"item_id": np.asarray(items, dtype=object),
             "category": np.array([categories[item] for item in items], dtype=object),
             "source": np.full(len(items), POPULAR, dtype=object),
             "n_sources": np.zeros(len(items)),
             "item_repeat_rate": repeat_rate.reindex(items).fillna(0.0).to_numpy(dtype=float)}
    return {name: np.concatenate([column, added.get(name, np.full(len(items), np.nan))])
            for name, column in candidates.items()}


class Recommender:
    """The recommendations of one worker: loads once, answers, reloads on demand."""

    def __init__(self, settings: Settings, options: ServingSettings):
        self.settings = settings
        self.options = options
        self.feature_store_kind: FeatureStoreKind = online_store_kind(settings)
        self._snapshot: Snapshot | None = None
        self._reload_lock = threading.Lock()
        self._connect = StoreConnector(settings)
        self._changes: ChangeFeed | None = None
        self._cursor = ""
        self._changes_due = 0.0
        self._changes_lock = threading.Lock()
        self._shared = (SharedResults(
            redis.Redis.from_url(settings.redis_url, retry=None,  # each command tried once
                                 socket_timeout=STORE_TIMEOUT_SECONDS,
                                 socket_connect_timeout=STORE_TIMEOUT_SECONDS),
            f"tailor:{settings.feast_project}", options.result_ttl_seconds)
            if settings.redis_url and options.result_cache_users else None)
        self._noticed: dict[str, tuple[int, int]] = {}
        """The latest change notice (`cursor_order`) naming each user, as far as read."""
        self._horizon = (0, 0)
        """Shared lists read through an older notice are not trusted (notices before it
        went unread, or were forgotten)."""
        self.breaker = CircuitBreaker(BREAKER, SystemClock())

    # Loading ---------------------------------------------------------------------------

    def load(self) -> None:
        """Load the champion, the catalog and the store; whatever fails leaves a reason
        (readiness reports it) and the popularity fallback answering."""
        with self._reload_lock:
            model: RegisteredRanker | None
            try:
                model = champion(self.settings, None)
                problem = None if model else f"no `{registry.CHAMPION}` {MODEL_NAME} is registered"
            except Exception as exc:
                logger.exception("loading the champion failed")
                model, problem = None, f"the champion could not be loaded: {exc}"
            try:  # before the caches are read: changes from now on are followed
                self._open_changes()
            except Exception as exc:
                logger.warning("the change notices cannot be read (%s); cached answers "
                               "last their TTL", exc)
                self._changes = None
            self._snapshot = assemble(self.settings, self.options, model, problem, self._connect)
            settle_heap()
            logger.info("serving %s version %s", MODEL_NAME, model.version if model else None)

    def reload(self) -> tuple[str | None, str | None]:
        """Re-read the champion and swap it in; returns (previous, current) versions. Raises
        `ReloadError` (the previous snapshot keeps serving) when there is nothing to load."""
        with self._reload_lock:
            previous = self._current()
            old = previous.model.version if previous.model else None
            try:
                model = champion(self.settings, previous.model)
                snapshot = (assemble(self.settings, self.options, model, None, self._connect)
                            if model else None)
            except Exception as exc:
                logger.exception("reloading failed; still serving version %s", old)
                raise ReloadError(f"the champion could not be loaded: {exc}; "
                                  f"still serving version {old}") from exc
            if model is None or snapshot is None:
                raise ReloadError(f"no `{registry.CHAMPION}` {MODEL_NAME} is registered; "
                                  f"still serving version {old}")
            if snapshot.store_problem and previous.store_problem is None:
                raise ReloadError(f"{snapshot.store_problem}; still serving version {old}")
            self._snapshot = snapshot
            settle_heap()
            logger.info("reloaded %s: version %s -> %s", MODEL_NAME, old, model.version)
            return old, model.version

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
        return Status(reason, version, self.feature_store_kind, len(snapshot.catalog.ids),
                      until)

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
        if snapshot.item_features is not None:
            snapshot.item_features.poll()
        ranking = snapshot.ranking
        exclude = frozenset(exclude)
        if ranking is not None and self.breaker.allow():
            started = time.monotonic()
            self._follow_changes(ranking)
            try:
                items = self._personalised(snapshot, ranking, user_id, k, category, exclude)
            except Exception:
                self.breaker.record(ok=False)
                logger.exception("ranking failed for user %s; answering with popularity%s",
                                 user_id, "" if self.breaker.allow() else
                                 f" alone for {self.breaker.settings.open_seconds:.0f} s")
            else:
                self.breaker.record(ok=True, seconds=time.monotonic() - started)
                if items is not None:
                    return Recommendation(items, ranking.model.version, fallback=False)
        return self._popular(snapshot, k, category, exclude)

    def _popular(self, snapshot: Snapshot, k: int, category: str | None,
                 exclude: frozenset[str]) -> Recommendation:
        popular = snapshot.popularity.top(k, snapshot.catalog, category, exclude)
        return Recommendation([ScoredItem(item, score, POPULAR) for item, score in popular],
                              snapshot.model.version if snapshot.model else None,
                              fallback=True)

    def _personalised(self, snapshot: Snapshot, ranking: Ranking, user_id: str, k: int,
                      category: str | None, exclude: frozenset[str]) -> list[ScoredItem] | None:
        ranked = self._ranked(ranking, user_id)
        if not ranked.history:
            return None
        columns = _filtered(ranked.columns, category, exclude)
        if len(columns["item_id"]) < k:  # the filters left too few: popular items that pass
            catalog = ranking.item_features.catalog
            taken = exclude | set(columns["item_id"])
            extra = [item for item, _ in snapshot.popularity.top(
                k - len(columns["item_id"]), catalog, category, taken)]
            if extra:
                popular = with_popular(ranking.candidates.of(""), extra,
                                       ranking.model.sources["repurchase"].item_repeat_rate,
                                       catalog.category_of)
                user = ranked.user if ranked.user is not None else ranking.store.user(user_id)
                columns = _ranked_columns(popular, self._score(ranking, user, popular),
                                          after=columns)
        return _top(columns, k) or None

    def _ranked(self, ranking: Ranking, user_id: str) -> RankedList:
        """The user's candidates ranked: from the result cache, or scored now and kept."""
        generation = ranking.item_features.generation
        started, scored_at, read_through = time.monotonic(), time.time(), self._cursor
        with observability.span("cache"):
            ranked = ranking.results.get(user_id, generation)
            if ranked is not None:
                observability.record_cache("hit")
                return ranked
            shared = self._shared if self._changes is not None else None
            state = f"{ranking.model.version}:{ranking.item_features.state}"
            found = shared.get(user_id, state) if shared is not None else None
            if shared is not None and found is not None \
                    and self._fresh(user_id, found.read_through):
                shared.hits += 1
                observability.record_cache("shared")
                ranked = RankedList(found.history, found.columns, generation)
                ranking.results.put(user_id, ranked, started, age=scored_at - found.scored_at)
                return ranked
        observability.record_cache("miss")
        user = ranking.store.user(user_id)
        history = OnlineHistory.of(user)
        if history is None:
            if user_id in ranking.candidates:
                logger.info("no online features for user %s; answering with popularity",
                            user_id)
            ranked = RankedList(False, {}, generation)
        else:
            candidates = user_candidates(ranking, user_id, history,
                                         ranking.item_features.catalog)
            scores = (self._score(ranking, user, candidates) if len(candidates["item_id"])
                      else np.zeros(0))
            ranked = RankedList(True, _ranked_columns(candidates, scores), generation, user)
        ranking.results.put(user_id, ranked, started)
        if shared is not None:
            shared.put(user_id, state, read_through, ranked, scored_at)
        return ranked

    def _score(self, ranking: Ranking, user: EntityRows, candidates: Columns) -> np.ndarray:
        """The ranker's scores of the candidates for the user (features: the user's rows,
        the item cache and the candidate columns)."""
        model = ranking.model
        item_ids = candidates["item_id"].tolist()
        online = ranking.store.request_features(user, item_ids, {"as_of": self.as_of(model)})
        rows = ChainMap(online, ranking.item_features.lookup(item_ids), candidates)
        # An object array of categories: what `feature_matrix` indexes, with no list copy.
        features = feature_matrix(rows, cast(Sequence[Any], candidates["category"]))
        with observability.span("model"):
            return model.predict(features)

    # Following the stream consumer's changes ------------------------------------------------

    def _open_changes(self) -> None:
        """Open the feed and read on from its newest notice; shared lists from before are
        not trusted (the notices before went unread)."""
        self._changes = open_changes(self.settings, request_timeout=STORE_TIMEOUT_SECONDS)
        self._cursor = self._changes.latest()
        self._horizon = cursor_order(self._cursor)
        self._noticed = {}

    def _notice(self, users: frozenset[str], order: tuple[int, int]) -> None:
        """Remember that these users' rows changed at `order`; past `NOTICED_USERS`, forget
        them all and distrust every shared list from before instead."""
        if len(self._noticed) + len(users) > NOTICED_USERS:
            self._noticed = {}
            self._horizon = order
        for user in users:
            self._noticed[user] = order

    def _fresh(self, user_id: str, read_through: str) -> bool:
        """Whether a shared list read through `read_through` saw the user's latest notice."""
        seen = cursor_order(read_through)
        return seen >= self._horizon and seen >= self._noticed.get(user_id, (0, 0))

    def _follow_changes(self, ranking: Ranking) -> None:
        """At most every `changes_poll_seconds`, read the change notices: drop the cached
        lists of users whose rows changed, re-read changed items (everything when notices
        went unseen). Another request reading them meanwhile: carry on."""
        now = time.monotonic()
        if now < self._changes_due or not self._changes_lock.acquire(blocking=False):
            return
        try:
            self._changes_due = now + self.options.changes_poll_seconds
            if self._changes is None:
                self._open_changes()
                ranking.results.clear()  # changes before the feed opened went unseen
                return
            changes = self._changes.since(self._cursor)
            self._cursor = changes.cursor
            if not changes.complete:
                logger.warning("change notices were trimmed unread; dropping cached answers")
                self._horizon = cursor_order(changes.cursor)
                ranking.results.clear()
                ranking.item_features.update(frozenset(), everything=True)
                return
            if changes.users:
                self._notice(changes.users, cursor_order(changes.cursor))
                ranking.results.invalidate(changes.users)
            if changes.items:
                ranking.item_features.update(changes.items)
        except Exception as exc:  # the feed is down: the TTL still bounds cached answers
            logger.warning("reading the change notices failed: %s", exc)
        finally:
            self._changes_lock.release()


def _filtered(columns: Columns, category: str | None, exclude: frozenset[str]) -> Columns:
    """The ranked columns without the excluded items and other categories."""
    keep = np.ones(len(columns["item_id"]), dtype=bool)
    if exclude:
        keep &= [item not in exclude for item in columns["item_id"]]
    if category is not None:
        keep &= columns["category"] == category
    return columns if keep.all() else {name: column[keep] for name, column in columns.items()}


def _top(columns: Columns, k: int) -> list[ScoredItem]:
    top = zip(columns["item_id"][:k], columns["score"][:k], columns["source"][:k], strict=True)
    return [ScoredItem(item, float(score), source) for item, score, source in top]


def _ranked_columns(candidates: Columns, scores: np.ndarray, after: Columns | None = None
                    ) -> Columns:
    """Item ids, scores, sources and categories best first (ties by item id), merged with
    the ranked columns `after` when given."""
    columns = {"item_id": candidates["item_id"], "score": scores,
               "source": candidates["source"], "category": candidates["category"]}
    if after is not None:
        columns = {name: np.concatenate([after[name], column])
                   for name, column in columns.items()}
    order = np.lexsort((columns["item_id"], -columns["score"]))
    return {name: column[order] for name, column in columns.items()}
