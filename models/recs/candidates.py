"""Candidate generation: per user, a few hundred items worth ranking, from several sources.

Every source is fitted on purchases strictly before a cutoff and scores (user, item) pairs:
- `repurchase`: the user's own history, each purchase weighted by recency (half-life);
- `covisit`: items bought in the same orders as the user's recent items (co-purchase);
- `als`: implicit-feedback matrix factorisation (implicit's ALS);
- `next_order`: what customers bought in the order after one holding the user's recent items;
- `popular`: items bought by the most distinct users over the last weeks (same for everyone).
`generate_candidates` unions the sources' top lists and keeps each source's score and rank as
features (missing where the source did not propose the item). `candidates_from_history` does
the same for one user from the history the online store aggregates (purchases after the
cutoff, or a user the sources never saw), with the fitted sources.
"""

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from implicit.als import AlternatingLeastSquares
from implicit.nearest_neighbours import CosineRecommender
from implicit.utils import ParameterWarning
from scipy import sparse
from threadpoolctl import threadpool_limits

SOURCES = ("repurchase", "covisit", "als", "next_order", "popular")
DAY = pd.Timedelta(days=1)
PROFILE_BLOCK = 1024
"""Users the profile sources score at a time: bounds their dense users x items block."""


@dataclass(frozen=True)
class CandidateConfig:
    """How many items each source proposes and the knobs of the sources."""

    repurchase_n: int = 150
    covisit_n: int = 100
    als_n: int = 100
    next_order_n: int = 100
    popular_n: int = 60
    half_life_days: float = 240.0
    popular_window_days: int = 30
    als_factors: int = 64
    als_iterations: int = 15
    als_regularization: float = 0.05
    next_order_history: int = 3
    seed: int = 42


def purchases_before(events: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Purchase events of known users strictly before `cutoff`."""
    chosen = (events["event_type"] == "purchase") & events["user_id"].notna()
    return events[chosen & (events["ts"] < cutoff)]


def recency_weights(ts: pd.Series, cutoff: pd.Timestamp, half_life_days: float) -> np.ndarray:
    """exp2(-age / half-life): 1 for a purchase at the cutoff, 0.5 one half-life earlier."""
    age_days = (cutoff - ts) / DAY
    return np.exp2(-age_days.to_numpy(dtype=float) / half_life_days)


def top_n(scores: pd.DataFrame, n: int, by: str = "score") -> pd.DataFrame:
    """The `n` best rows per user by `by` (ties broken by item id), with a 1-based rank."""
    ordered = scores.sort_values(["user_id", by, "item_id"], ascending=[True, False, True])
    ordered = ordered.groupby("user_id", sort=False).head(n).copy()
    ordered["rank"] = ordered.groupby("user_id", sort=False).cumcount() + 1
    return ordered


class InteractionMatrix:
    """User x item matrix of recency-weighted purchase counts, with id <-> index maps."""

    def __init__(self, purchases: pd.DataFrame, cutoff: pd.Timestamp, half_life_days: float):
        self.users = pd.Index(sorted(purchases["user_id"].unique()))
        self.items = pd.Index(sorted(purchases["item_id"].unique()))
        weights = recency_weights(purchases["ts"], cutoff, half_life_days)
        self.matrix = sparse.csr_matrix(
            (weights, (self.users.get_indexer(purchases["user_id"]),
                       self.items.get_indexer(purchases["item_id"]))),
            shape=(len(self.users), len(self.items)), dtype=np.float32,
        )
        self.matrix.sum_duplicates()

    def baskets(self, purchases: pd.DataFrame, orders: pd.Index) -> sparse.csr_matrix:
        """Order x item matrix of `purchases` (rows in the order of `orders`, session ids):
        1 where the order holds the item, however many lines it has for it."""
        baskets = sparse.csr_matrix(
            (np.ones(len(purchases), dtype=np.float32),
             (orders.get_indexer(purchases["session_id"]),
              self.items.get_indexer(purchases["item_id"]))),
            shape=(len(orders), len(self.items)),
        )
        baskets.sum_duplicates()
        baskets.data[:] = 1.0
        return baskets

    def frame(self, user_rows: np.ndarray, item_cols: np.ndarray, scores: np.ndarray):
        return pd.DataFrame({"user_id": self.users[user_rows], "item_id": self.items[item_cols],
                             "score": scores.astype(float)})


def _dense_top_n(matrix: InteractionMatrix, rows: np.ndarray, scores: np.ndarray, n: int):
    """Top `n` positive entries of each row of a dense users x items score block."""
    n = min(n, scores.shape[1])
    best = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    values = np.take_along_axis(scores, best, axis=1)
    keep = values > 0
    user_rows = np.repeat(rows, n).reshape(len(rows), n)[keep]
    return matrix.frame(user_rows, best[keep], values[keep])


def _profile_top_n(matrix: InteractionMatrix, user_ids: list[str], profiles: sparse.csr_matrix,
                   item_to_item: sparse.csr_matrix, n: int) -> pd.DataFrame:
    """Top `n` items of each known user by their profile row times an item-to-item matrix."""
    rows = matrix.users.get_indexer(user_ids)
    rows = rows[rows >= 0]
    if len(rows) == 0:
        return pd.DataFrame(columns=["user_id", "item_id", "score", "rank"])
    blocks = np.split(rows, range(PROFILE_BLOCK, len(rows), PROFILE_BLOCK))
    return top_n(pd.concat([_dense_top_n(matrix, block,
                                         (profiles[block] @ item_to_item).toarray(), n)
                            for block in blocks], ignore_index=True), n)


class RepurchaseSource:
    """The user's own purchases, scored by recency-weighted frequency.

    Besides the score it proposes each pair with its purchase rhythm: the mean gap between
    the distinct days it was bought on, and how far into that gap the cutoff lies. It also
    knows, per item, the share of its buyers who bought it on more than one day.
    """

    name = "repurchase"
    extra_columns = ("gap_days", "due_ratio")

    def fit(self, purchases: pd.DataFrame, cutoff: pd.Timestamp, config: CandidateConfig):
        weights = recency_weights(purchases["ts"], cutoff, config.half_life_days)
        frame = purchases.assign(score=weights, day=purchases["ts"].dt.floor("D"))
        pairs = frame.groupby(["user_id", "item_id"], as_index=False).agg(
            score=("score", "sum"), days=("day", "nunique"), first=("day", "min"),
            last=("day", "max"))
        gap = (pairs["last"] - pairs["first"]) / DAY / (pairs["days"] - 1).where(
            pairs["days"] > 1)
        pairs["gap_days"] = gap
        pairs["due_ratio"] = ((cutoff - pairs["last"]) / DAY) / gap
        self.scores = pairs[["user_id", "item_id", "score", *self.extra_columns]]
        self.item_repeat_rate = (pairs["days"] > 1).groupby(pairs["item_id"]).mean()
        self.n = config.repurchase_n
        self.half_life_days = config.half_life_days
        return self

    def recommend(self, user_ids: list[str]) -> pd.DataFrame:
        return top_n(self.scores[self.scores["user_id"].isin(user_ids)], self.n)


class PopularSource:
    """Items bought by the most distinct users in the last `popular_window_days`."""

    name = "popular"

    def fit(self, purchases: pd.DataFrame, cutoff: pd.Timestamp, config: CandidateConfig):
        recent = purchases[purchases["ts"] >= cutoff - config.popular_window_days * DAY]
        counts = recent.groupby("item_id")["user_id"].nunique()
        ranked = counts.sort_index().sort_values(ascending=False, kind="stable")
        self.ranking = ranked.head(config.popular_n)
        return self

    def recommend(self, user_ids: list[str]) -> pd.DataFrame:
        items = self.ranking.index.to_numpy()
        frame = pd.DataFrame({
            "user_id": np.repeat(np.asarray(user_ids, dtype=object), len(items)),
            "item_id": np.tile(items, len(user_ids)),
            "score": np.tile(self.ranking.to_numpy(dtype=float), len(user_ids)),
        })
        frame["rank"] = np.tile(np.arange(1, len(items) + 1), len(user_ids))
        return frame


class CovisitSource:
    """Items co-purchased (same order) with the user's recency-weighted history."""

    name = "covisit"

    def fit(self, purchases: pd.DataFrame, cutoff: pd.Timestamp, config: CandidateConfig,
            matrix: InteractionMatrix | None = None):
        self.matrix = matrix or InteractionMatrix(purchases, cutoff, config.half_life_days)
        baskets = self.matrix.baskets(purchases,
                                      pd.Index(sorted(purchases["session_id"].unique())))
        together = (baskets.T @ baskets).tocsr()
        together.setdiag(0)
        together.eliminate_zeros()
        # Normalise by how often each proposed item sells, so bestsellers do not dominate.
        sold = np.asarray(baskets.sum(axis=0)).ravel()
        self.cooccurrence = together @ sparse.diags(1 / np.sqrt(np.maximum(sold, 1)))
        self.n = config.covisit_n
        return self

    def recommend(self, user_ids: list[str]) -> pd.DataFrame:
        return _profile_top_n(self.matrix, user_ids, self.matrix.matrix, self.cooccurrence,
                              self.n)


class FactorizationSource:
    """implicit's ALS on log-scaled, recency-weighted purchase counts."""

    name = "als"

    def fit(self, purchases: pd.DataFrame, cutoff: pd.Timestamp, config: CandidateConfig,
            matrix: InteractionMatrix | None = None):
        self.matrix = matrix or InteractionMatrix(purchases, cutoff, config.half_life_days)
        confidence = self.matrix.matrix.copy()
        confidence.data = 1 + 20 * np.log1p(confidence.data)
        with threadpool_limits(1, "blas"):  # implicit's own threads do the work
            self.model = AlternatingLeastSquares(
                factors=config.als_factors, iterations=config.als_iterations,
                regularization=config.als_regularization, random_state=config.seed,
                num_threads=0,  # every core: each user's solve is its own, same factors
            )
            self.model.fit(confidence, show_progress=False)
        self.model.num_threads = 1  # recommending (per request, serving) stays on one
        self.confidence = confidence
        self.n = config.als_n
        return self

    def recommend(self, user_ids: list[str], n: int | None = None) -> pd.DataFrame:
        """The top `n` (default: the configured `als_n`) items of each user."""
        return _implicit_recommend(self.model, self.matrix, self.confidence, user_ids,
                                   n or self.n)


class NextOrderSource:
    """Items customers bought in the order after one holding the user's recent items.

    Fitted on each customer's consecutive orders: `transitions[i, j]` is the share of orders
    holding item i whose next order held item j. A user's score for j sums it over the items
    of their last `next_order_history` orders, each counting half as much as the one after.
    """

    name = "next_order"

    def fit(self, purchases: pd.DataFrame, cutoff: pd.Timestamp, config: CandidateConfig,
            matrix: InteractionMatrix | None = None):
        self.matrix = matrix or InteractionMatrix(purchases, cutoff, config.half_life_days)
        orders = (purchases.sort_values("ts").drop_duplicates("session_id")
                  .sort_values(["user_id", "ts"], kind="stable", ignore_index=True))
        baskets = self.matrix.baskets(purchases, pd.Index(orders["session_id"]))
        customer = orders["user_id"].to_numpy()
        followed = np.flatnonzero(customer[1:] == customer[:-1])  # orders with a next order
        earlier = baskets[followed]
        per_item = np.asarray(earlier.sum(axis=0)).ravel()
        self.transitions = (sparse.diags(1 / np.maximum(per_item, 1))
                            @ (earlier.T @ baskets[followed + 1])).tocsr()
        orders_after = orders.groupby("user_id").cumcount(ascending=False).to_numpy()
        recent = orders_after < config.next_order_history
        self.profiles = sparse.csr_matrix(
            (0.5 ** orders_after[recent],
             (self.matrix.users.get_indexer(customer[recent]), np.flatnonzero(recent))),
            shape=(len(self.matrix.users), len(orders)),
        ) @ baskets
        self.n = config.next_order_n
        self.history = config.next_order_history
        return self

    def recommend(self, user_ids: list[str]) -> pd.DataFrame:
        return _profile_top_n(self.matrix, user_ids, self.profiles, self.transitions, self.n)


class ItemKnnSource:
    """Item-to-item cosine neighbours (implicit's CosineRecommender): a baseline."""

    name = "item_knn"

    def fit(self, purchases: pd.DataFrame, cutoff: pd.Timestamp, config: CandidateConfig,
            neighbours: int = 100):
        self.matrix = InteractionMatrix(purchases, cutoff, config.half_life_days)
        self.model = CosineRecommender(K=neighbours, num_threads=1)
        with warnings.catch_warnings():  # implicit converts its own normalised copy to CSR
            warnings.simplefilter("ignore", ParameterWarning)
            self.model.fit(self.matrix.matrix, show_progress=False)
        self.n = config.als_n
        return self

    def recommend(self, user_ids: list[str]) -> pd.DataFrame:
        return _implicit_recommend(self.model, self.matrix, self.matrix.matrix, user_ids, self.n)


def _implicit_recommend(model, matrix: InteractionMatrix, user_items, user_ids, n):
    rows = matrix.users.get_indexer(user_ids)
    rows = rows[rows >= 0]
    if len(rows) == 0:
        return pd.DataFrame(columns=["user_id", "item_id", "score", "rank"])
    n = min(n, len(matrix.items))  # implicit pads a longer list with repeats of item 0
    ids, scores = model.recommend(rows, user_items[rows], N=n, filter_already_liked_items=False)
    valid = ids >= 0
    user_rows = np.repeat(rows, ids.shape[1]).reshape(ids.shape)[valid]
    return top_n(matrix.frame(user_rows, ids[valid], scores[valid]), n)


def fit_sources(purchases: pd.DataFrame, cutoff: pd.Timestamp,
                config: CandidateConfig = CandidateConfig()) -> dict:
    """Fit every candidate source on purchases before `cutoff` (the sources that read the
    user x item matrix share one)."""
    matrix = InteractionMatrix(purchases, cutoff, config.half_life_days)
    return {
        "repurchase": RepurchaseSource().fit(purchases, cutoff, config),
        "covisit": CovisitSource().fit(purchases, cutoff, config, matrix),
        "als": FactorizationSource().fit(purchases, cutoff, config, matrix),
        "next_order": NextOrderSource().fit(purchases, cutoff, config, matrix),
        "popular": PopularSource().fit(purchases, cutoff, config),
    }


def generate_candidates(sources: dict, user_ids: list[str]) -> pd.DataFrame:
    """Union of the sources' lists: one row per (user, item) with `<source>_score/_rank`
    (and a source's extra columns), how many sources proposed it, and the item's repeat
    rate among its buyers; sorted by user and item."""
    keys = ["user_id", "item_id"]
    proposals = {name: source.recommend(user_ids) for name, source in sources.items()}
    merged = (pd.concat([proposed[keys] for proposed in proposals.values()], ignore_index=True)
              .drop_duplicates().sort_values(keys, ignore_index=True))
    pairs = pd.MultiIndex.from_frame(merged)
    columns = {}
    for name, proposed in proposals.items():
        rows = pairs.get_indexer(pd.MultiIndex.from_frame(proposed[keys]))
        for column in ("score", "rank", *getattr(sources[name], "extra_columns", ())):
            values = np.full(len(merged), np.nan)
            values[rows] = proposed[column].to_numpy(dtype=float)
            columns[f"{name}_{column}"] = values
    merged = merged.assign(**columns)
    merged["n_sources"] = merged[[f"{name}_rank" for name in sources]].notna().sum(axis=1)
    repeat_rate = sources["repurchase"].item_repeat_rate
    merged["item_repeat_rate"] = merged["item_id"].map(repeat_rate).fillna(0.0)
    return merged


Proposal = tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]
"""One source's list for one user, best first: item ids, scores, extra columns."""


def _best(items: np.ndarray, scores: np.ndarray, n: int,
          extra: dict[str, np.ndarray] | None = None) -> Proposal:
    """The `n` highest-scoring items (ties by item id, as `top_n`)."""
    order = np.lexsort((items, -scores))[:n]
    return items[order], scores[order], {name: v[order] for name, v in (extra or {}).items()}


def _positive_best(items: pd.Index, scores: np.ndarray, n: int) -> Proposal:
    """The `n` best of a dense score row over `items`, positive scores only."""
    positive = np.flatnonzero(scores > 0)
    return _best(items.to_numpy()[positive], scores[positive], n)


def candidates_from_history(sources: dict, user_id: str, history: pd.DataFrame,
                            now: pd.Timestamp) -> pd.DataFrame:
    """`generate_candidates` for one user from their aggregated purchase history (one row per
    item: `item_id`, `times_bought`, `last_purchase_ts`), with the sources fitted at their
    cutoff and recency weights taken at `now` (a purchase after it counts as at `now`).

    The history holds no single purchases, so it approximates what the sources read:
    an item's recency-weighted count is `times_bought` purchases at its last purchase (more
    than the sum over its purchases when they are older); orders are the distinct last
    purchase instants (an item bought again later only counts in its latest order); the
    purchase rhythm (`gap_days`) is the candidate state's for pairs it knows, NaN otherwise;
    ALS folds the user in (implicit's `recalculate_user`) instead of its trained factors.
    Items the sources never saw are proposed by `repurchase` only.
    """
    repurchase = sources["repurchase"]
    # States pickled before the sources kept these knobs were fitted with the defaults.
    half_life = getattr(repurchase, "half_life_days", CandidateConfig.half_life_days)
    orders = getattr(sources["next_order"], "history", CandidateConfig.next_order_history)
    bought = history[(history["times_bought"] > 0) & history["last_purchase_ts"].notna()]
    items = bought["item_id"].to_numpy(dtype=object)
    last = bought["last_purchase_ts"].where(bought["last_purchase_ts"] < now, now)
    weights = bought["times_bought"].to_numpy(dtype=float) * recency_weights(
        last, now, half_life)
    matrix = sources["covisit"].matrix
    columns = matrix.items.get_indexer(items)
    seen = columns >= 0
    profile = sparse.csr_matrix((weights[seen], (np.zeros(seen.sum(), dtype=np.intp),
                                                 columns[seen])),
                                shape=(1, len(matrix.items)), dtype=np.float32)
    proposals = {
        "repurchase": _repurchase(repurchase, user_id, items, weights, last, now),
        "covisit": _positive_best(
            matrix.items, (profile @ sources["covisit"].cooccurrence).toarray().ravel(),
            sources["covisit"].n),
        "als": _fold_in(sources["als"], profile),
        "next_order": _next_order(sources["next_order"],
                                  last.to_numpy(dtype="datetime64[ns]")[seen],
                                  columns[seen], orders),
        "popular": _best(sources["popular"].ranking.index.to_numpy(dtype=object),
                         sources["popular"].ranking.to_numpy(dtype=float),
                         len(sources["popular"].ranking)),
    }
    return _union_of_one(sources, user_id, proposals)


def _repurchase(source: RepurchaseSource, user_id: str, items: np.ndarray, weights: np.ndarray,
                last: pd.Series, now: pd.Timestamp) -> Proposal:
    """The user's items by recency-weighted count, with the state's gaps where it has them."""
    users = source.scores["user_id"].to_numpy()  # sorted: the groupby's order
    known = source.scores.iloc[np.searchsorted(users, user_id, side="left"):
                               np.searchsorted(users, user_id, side="right")]
    gap = pd.Series(known["gap_days"].to_numpy(dtype=float),
                    index=known["item_id"]).reindex(items).to_numpy()
    due = ((now - last.dt.floor("D")) / DAY).to_numpy(dtype=float) / gap
    return _best(items, weights, source.n, {"gap_days": gap, "due_ratio": due})


def _fold_in(source: FactorizationSource, profile: sparse.csr_matrix) -> Proposal:
    """ALS's top items for a profile row: its user factors solved against the item factors."""
    confidence = profile.copy()
    confidence.data = 1 + 20 * np.log1p(confidence.data)
    n = min(source.n, len(source.matrix.items))  # implicit pads a longer list with item 0
    if not confidence.nnz:
        return _best(np.empty(0, dtype=object), np.empty(0), 0)
    ids, scores = source.model.recommend(0, confidence, N=n, filter_already_liked_items=False,
                                         recalculate_user=True)
    valid = ids >= 0
    return _best(source.matrix.items.to_numpy()[ids[valid]], scores[valid].astype(float), n)


def _next_order(source: NextOrderSource, last: np.ndarray, columns: np.ndarray,
                orders: int) -> Proposal:
    """NextOrderSource's items for a user whose last `orders` orders are the most recent
    distinct last purchase instants of their items (`columns` of the source's matrix)."""
    instants, order = np.unique(last, return_inverse=True)
    orders_after = len(instants) - 1 - order
    recent = orders_after < orders
    profile = sparse.csr_matrix((0.5 ** orders_after[recent],
                                 (np.zeros(recent.sum(), dtype=np.intp), columns[recent])),
                                shape=(1, len(source.matrix.items)))
    return _positive_best(source.matrix.items,
                          (profile @ source.transitions).toarray().ravel(), source.n)


def _union_of_one(sources: dict, user_id: str, proposals: dict[str, Proposal]) -> pd.DataFrame:
    """`generate_candidates`' rows for one user from the sources' proposals."""
    items = np.unique(np.concatenate([proposed for proposed, _, _ in proposals.values()]))
    frame = {"user_id": np.full(len(items), user_id, dtype=object), "item_id": items}
    for name in sources:
        proposed, scores, extra = proposals[name]
        rows = np.searchsorted(items, proposed)
        for column, values in {"score": scores, "rank": np.arange(1.0, len(proposed) + 1),
                               **extra}.items():
            frame[f"{name}_{column}"] = np.full(len(items), np.nan)
            frame[f"{name}_{column}"][rows] = values
    ranks = np.column_stack([frame[f"{name}_rank"] for name in sources])
    frame["n_sources"] = (~np.isnan(ranks)).sum(axis=1)
    frame["item_repeat_rate"] = sources["repurchase"].item_repeat_rate.reindex(
        items).fillna(0.0).to_numpy()
    return pd.DataFrame(frame)
