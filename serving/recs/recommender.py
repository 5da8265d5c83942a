"""The request path: one `Recommender` per worker answers from the current `Snapshot`.

A request picks the snapshot up once; a reload assembles the next one to the side and swaps
one reference, so a request sees the old model or the new one, never a mix, and the old one
keeps answering until the new one is fully loaded (or for good, when loading fails).

Personalised path (`Snapshot.ranking` loaded, the user has online features): the user's
rows are read once (stats and pair index); the user's candidates (the precomputed table's,
or generated from the online history when it holds purchases the candidate state lacks:
`serving.recs.fresh`) minus excluded items and other categories, topped up with popular
items passing the same filters to `k`; user and user x item features from the user's rows,
item features from the cache; `feature_matrix` and the booster score them; ties by item id.
Anything missing on the way (no model, no online features for the user, an error) answers
with the popularity fallback: `recommend` never raises for those.
"""

import logging
import threading
from collections import ChainMap
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import pandas as pd

from features.settings import Settings
from models import registry
from models.recs.artifacts import MODEL_NAME, RegisteredRanker
from models.recs.ranker import feature_matrix
from serving.config import ServingSettings
from serving.recs.caches import Columns, settle_heap
from serving.recs.fresh import OnlineHistory, user_candidates
from serving.recs.snapshot import POPULAR, Ranking, Snapshot, StoreConnector, assemble, champion
from serving.schemas import FeatureStoreKind, Source

logger = logging.getLogger(__name__)


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
        self.feature_store_kind: FeatureStoreKind = "redis" if settings.redis_url else "sqlite"
        self._snapshot: Snapshot | None = None
        self._reload_lock = threading.Lock()
        self._connect = StoreConnector(settings)

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
        ranking = snapshot.ranking
        exclude = frozenset(exclude)
        if ranking is not None:
            try:
                items = self._personalised(snapshot, ranking, user_id, k, category, exclude)
            except Exception:
                logger.exception("ranking failed for user %s; answering with popularity",
                                 user_id)
            else:
                if items is not None:
                    return Recommendation(items, ranking.model.version, fallback=False)
        popular = snapshot.popularity.top(k, snapshot.catalog, category, exclude)
        return Recommendation([ScoredItem(item, score, POPULAR) for item, score in popular],
                              snapshot.model.version if snapshot.model else None,
                              fallback=True)

    def _personalised(self, snapshot: Snapshot, ranking: Ranking, user_id: str, k: int,
                      category: str | None, exclude: frozenset[str]) -> list[ScoredItem] | None:
        model = ranking.model
        user = ranking.store.user(user_id)
        history = OnlineHistory.of(user)
        if history is None:
            if user_id in ranking.candidates:
                logger.info("no online features for user %s; answering with popularity",
                            user_id)
            return None
        catalog = ranking.item_features.catalog
        candidates = user_candidates(ranking, user_id, history, catalog)
        keep = np.ones(len(candidates["item_id"]), dtype=bool)
        if exclude:
            keep &= [item not in exclude for item in candidates["item_id"]]
        if category is not None:
            keep &= candidates["category"] == category
        if not keep.all():
            candidates = {name: column[keep] for name, column in candidates.items()}
        if len(candidates["item_id"]) < k:  # the filters left too few: popular items that pass
            taken = exclude | set(candidates["item_id"])
            extra = snapshot.popularity.top(k - len(candidates["item_id"]), catalog, category,
                                            taken)
            candidates = with_popular(candidates, [item for item, _ in extra],
                                      model.sources["repurchase"].item_repeat_rate,
                                      catalog.category_of)
        if not len(candidates["item_id"]):
            return None
        item_ids = candidates["item_id"].tolist()
        online = ranking.store.request_features(user, item_ids, {"as_of": self.as_of(model)})
        rows = ChainMap(online, ranking.item_features.lookup(item_ids), candidates)
        # An object array of categories: what `feature_matrix` indexes, with no list copy.
        features = feature_matrix(rows, cast(Sequence[Any], candidates["category"]))
        scores = np.asarray(model.booster.predict(features, num_threads=1))
        top = np.lexsort((candidates["item_id"], -scores))[:k]  # ties: by id
        return [ScoredItem(item_ids[row], float(scores[row]), candidates["source"][row])
                for row in top]
