"""The recommender's ranker over candidates and their `recs_ranker_v1` features: LightGBM
LambdaRank blended with a binary classifier, merged into one native booster."""

import operator
import re
from collections import ChainMap
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import repeat
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from models.dask_fit import Rows, fit
from models.recs.candidates import SOURCES

FEAST_FEATURES = (
    "user_frequency", "user_monetary", "user_distinct_items", "user_returns",
    "item_purchases_7d", "item_purchases_30d", "item_purchases_90d",
    "item_buyers_7d", "item_buyers_30d", "item_buyers_90d", "item_trend_7d_30d",
    "item_rebuy_rate_30d",
    "item_price_last", "item_price_mean_30d", "item_price_min", "item_price_max",
    "user_item_times_bought", "user_item_units_bought", "user_item_units_returned",
    "user_recency_days", "user_tenure_days", "user_item_days_since_last_purchase",
)
CANDIDATE_FEATURES = (*(f"{s}_{kind}" for s in SOURCES for kind in ("score", "rank")),
                      "repurchase_gap_days", "repurchase_due_ratio", "n_sources",
                      "item_repeat_rate")
DERIVED_FEATURES = ("user_category_share", "user_item_share_of_orders", "user_item_due_ratio",
                    "user_days_per_order")
BASE_FEATURES = (*CANDIDATE_FEATURES, *FEAST_FEATURES)
FEATURE_COLUMNS = (*BASE_FEATURES, *DERIVED_FEATURES)


def _category_shares(names: Sequence, shares: Sequence, categories: Sequence) -> np.ndarray:
    """Each row's share of its category in its user's purchases (`names` and the aligned
    `shares`), 0 when either is missing. Rows holding the same lists (a user's, on each of
    the user's candidates) look their categories up in one table."""
    user_names, user_shares = _one_object(names), _one_object(shares)
    if user_names is not None and user_shares is not None:  # serving: one user's rows
        table = _share_table(user_names, user_shares)
        return np.fromiter(map(table.get, categories, repeat(0.0)), dtype=float,
                           count=len(categories))
    values = np.zeros(len(categories))
    tables: dict[tuple[int, int], tuple[Any, Any, dict]] = {}
    for row, (user_names, user_shares, category) in enumerate(
            zip(names, shares, categories, strict=True)):
        if user_names is None or category is None:
            continue
        key = (id(user_names), id(user_shares))
        if key not in tables:  # the lists are kept too: their ids stay theirs
            tables[key] = (user_names, user_shares, _share_table(user_names, user_shares))
        values[row] = tables[key][2].get(category, 0.0)
    return values


def _one_object(values: Sequence) -> Any:
    """The object every element of `values` is (None when they differ, or there are none)."""
    first = next(iter(values), None)
    return first if all(map(operator.is_, values, repeat(first))) else None


def _share_table(names: Sequence, shares: Sequence) -> dict:
    """Category -> share; a name given twice keeps its first share."""
    table: dict = {}
    for name, share in zip(names, shares, strict=True):
        table.setdefault(name, share)
    table.pop(None, None)  # a row without a category has no share
    return table


def feature_matrix(rows: Mapping[str, Any], item_categories: Sequence) -> np.ndarray:
    """The model's features, one row per candidate, in `FEATURE_COLUMNS` order: a float64
    C-ordered matrix, what the booster predicts on without a copy (this runs on every
    request as well as in training).

    `rows` maps column names to one value per row (a DataFrame, or numpy columns): the
    candidate columns and the `recs_ranker_v1` features, including the user's category
    names and shares; a column it lacks is NaN. `item_categories` is each row's category.
    """
    # Filled a feature at a time (contiguous rows of the transpose), then transposed once.
    columns = np.full((len(FEATURE_COLUMNS), len(item_categories)), np.nan)
    # A ChainMap's maps looked at directly: a miss in one of them raises (and costs) nothing.
    sources = rows.maps if isinstance(rows, ChainMap) else [rows]
    for position, name in enumerate(BASE_FEATURES):
        for source in sources:
            if name in source:
                columns[position] = _floats(source[name])
                break  # a column it lacks stays NaN
    column = dict(zip(BASE_FEATURES, columns[:len(BASE_FEATURES)], strict=True))
    orders = _positive(column["user_frequency"])
    times_bought = column["user_item_times_bought"]
    tenure = column["user_tenure_days"]
    with np.errstate(divide="ignore", invalid="ignore"):  # as pandas: inf and NaN, silently
        derived = {
            "user_category_share": _category_shares(
                rows["user_category_names"], rows["user_category_shares"], item_categories),
            "user_item_share_of_orders": np.nan_to_num(times_bought, nan=0.0) / orders,
            # How far into its usual repurchase cycle the pair is (1 = one average gap since).
            "user_item_due_ratio": column["user_item_days_since_last_purchase"] / (
                tenure / _positive(times_bought)),
            "user_days_per_order": tenure / orders,
        }
    for position, name in enumerate(DERIVED_FEATURES, start=len(BASE_FEATURES)):
        columns[position] = derived[name]
    return np.ascontiguousarray(columns.T)


def ranking_features(examples: pd.DataFrame, categories: pd.Series) -> pd.DataFrame:
    """`feature_matrix` of candidates joined with their Feast features, as a frame on their
    index; `categories` maps item id to category."""
    matrix = feature_matrix(examples, examples["item_id"].map(categories))
    return pd.DataFrame(matrix, columns=list(FEATURE_COLUMNS), index=examples.index)


def _floats(values) -> np.ndarray:
    """A column as float64, NaN where missing."""
    if isinstance(values, pd.Series):
        return values.to_numpy(dtype=float, na_value=np.nan)
    return np.asarray(values, dtype=float)


def _positive(values: np.ndarray) -> np.ndarray:
    """The values where positive, NaN elsewhere (a divisor that means nothing otherwise)."""
    return np.where(values > 0, values, np.nan)


def group_sizes(user_ids: pd.Series) -> np.ndarray:
    """Query sizes of rows sorted by query (consecutive equal ids form one query)."""
    starts = np.flatnonzero(np.r_[True, user_ids.to_numpy()[1:] != user_ids.to_numpy()[:-1]])
    return np.diff(np.r_[starts, len(user_ids)])


@dataclass
class RankerParams:
    """LightGBM hyper-parameters, shared by the LambdaRank model and the blended classifier."""

    n_estimators: int = 600
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 50
    subsample: float = 0.8
    subsample_freq: int = 1
    colsample_bytree: float = 0.8
    reg_lambda: float = 1.0
    random_state: int = 42
    dask_scheduler: str | None = None
    """Not a hyper-parameter: the Dask scheduler whose cluster fits the models
    (`models.dask_fit`); None: this process."""

    def as_lightgbm(self, objective: str = "lambdarank") -> dict:
        params = {k: v for k, v in asdict(self).items() if k != "dask_scheduler"}
        return {**params, "objective": objective, "verbose": -1, "n_jobs": 2}


def _trees(model_text: str) -> tuple[str, list[str], str]:
    """A LightGBM text model cut into (header, one block per tree, what follows the trees)."""
    header, rest = model_text.split("\nTree=", 1)
    trees, tail = ("Tree=" + rest).split("end of trees", 1)
    blocks = [block for block in re.split(r"(?=^Tree=\d+$)", trees, flags=re.M) if block.strip()]
    return header, blocks, tail


def _scaled(tree: str, weight: float) -> str:
    def scale(match: re.Match) -> str:
        return match[1] + " ".join(repr(float(v) * weight) for v in match[2].split())
    return re.sub(r"^(leaf_value=|internal_value=)(.*)$", scale, tree, flags=re.M)


def blend_boosters(ranker: lgb.Booster, classifier: lgb.Booster, weight: float) -> lgb.Booster:
    """One booster whose raw score is `ranker`'s plus `weight` x `classifier`'s (its log-odds).

    A LightGBM model scores the sum of its trees, so the classifier's trees, their leaf values
    scaled, are appended to the ranker's (in LightGBM's own text format, header and parameters
    the ranker's). Serving, the registry and promotion keep handling one native booster.
    """
    if ranker.feature_name() != classifier.feature_name():
        raise ValueError("the ranker and the classifier were trained on different features")
    header, ranker_trees, tail = _trees(ranker.model_to_string())
    _, classifier_trees, _ = _trees(classifier.model_to_string())
    trees = ranker_trees + [_scaled(tree, weight) for tree in classifier_trees]
    trees = [re.sub(r"^Tree=\d+$", f"Tree={n}", tree, count=1, flags=re.M)
             for n, tree in enumerate(trees)]
    # The per-tree byte sizes are an optional index the loader checks: drop the stale one.
    header = "\n".join(line for line in header.splitlines() if not line.startswith("tree_sizes="))
    return lgb.Booster(model_str=f"{header}\n\n{''.join(trees)}end of trees{tail}")


def _fitted(booster: lgb.Booster | None) -> lgb.Booster:
    if booster is None:
        raise RuntimeError("the ranker is not fitted yet: call fit() first")
    return booster


class Ranker:
    """LambdaRank blended with a binary classifier on the same candidates and features.

    The LambdaRank model orders each user's candidates (trees picked by early stopping on
    validation NDCG@10); the classifier estimates each candidate's purchase odds (early
    stopping on validation log-loss). Their blend, the classifier's log-odds scaled to the
    ranker's spread on the validation month, ranks better than LambdaRank alone on both time
    splits of the benchmark (the classifier alone was not measured). Both are refitted on
    train and validation together and merged into one booster (`blend_boosters`).
    """

    def __init__(self, params: RankerParams | None = None):
        self.params = params or RankerParams()
        self._model: lgb.Booster | None = None
        self._validation_model: lgb.Booster | None = None
        self.best_iteration: int | None = None
        self.classifier_best_iteration: int | None = None
        self.blend_weight: float | None = None
        self.components: dict[str, lgb.Booster] = {}

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame, label: str = "label") -> "Ranker":
        """Fit on `train`, pick each model's number of trees on `valid`, refit on both.

        Both frames hold `query`, the feature columns and `label`, sorted by query. The fits
        run on the Dask cluster of `params.dask_scheduler` when set (`models.dask_fit`).
        """
        columns = list(FEATURE_COLUMNS)

        def rows(frame: pd.DataFrame, ranking: bool = True) -> Rows:
            return Rows(frame[columns], frame[label],
                        group_sizes(frame["query"]) if ranking else None)

        scheduler = self.params.dask_scheduler
        ranker = fit(lgb.LGBMRanker(**self.params.as_lightgbm()), rows(train), rows(valid),
                     stopping_rounds=50, scheduler=scheduler, eval_at=[10])
        classifier = fit(lgb.LGBMClassifier(**self.params.as_lightgbm("binary")),
                         rows(train, False), rows(valid, False), stopping_rounds=50,
                         scheduler=scheduler)
        self.best_iteration = _best_iteration(ranker, self.params)
        self.classifier_best_iteration = _best_iteration(classifier, self.params)
        spread = np.std(classifier.predict(valid[columns], raw_score=True))
        ranker_spread = np.std(ranker.predict(valid[columns]))
        self.blend_weight = float(ranker_spread / spread) if spread > 0 else 0.0
        # Never saw `valid`'s labels (beyond early stopping): for honest validation.
        self._validation_model = blend_boosters(ranker.booster_, classifier.booster_,
                                               self.blend_weight)

        both = pd.concat([train, valid], ignore_index=True)
        ranker = fit(lgb.LGBMRanker(**{**self.params.as_lightgbm(),
                                       "n_estimators": self.best_iteration}), rows(both),
                     scheduler=scheduler)
        classifier = fit(lgb.LGBMClassifier(**{**self.params.as_lightgbm("binary"),
                                               "n_estimators": self.classifier_best_iteration}),
                         rows(both, False), scheduler=scheduler)
        self.components = {"ranker": ranker.booster_, "classifier": classifier.booster_}
        self._model = blend_boosters(ranker.booster_, classifier.booster_, self.blend_weight)
        return self

    @property
    def model(self) -> lgb.Booster:
        """The blend refitted on all examples: the booster registered and served."""
        return _fitted(self._model)

    @property
    def validation_model(self) -> lgb.Booster:
        """The blend fitted before the validation cutoff (never saw its labels)."""
        return _fitted(self._validation_model)

    def score(self, features: pd.DataFrame) -> np.ndarray:
        """Ranking scores (higher first) of feature rows."""
        return np.asarray(self.model.predict(features[list(FEATURE_COLUMNS)]))

    def validation_score(self, features: pd.DataFrame) -> np.ndarray:
        """Scores of the models fitted before the validation cutoff (out of sample there)."""
        return np.asarray(self.validation_model.predict(features[list(FEATURE_COLUMNS)]))

    def feature_importance(self) -> pd.Series:
        """Each feature's share of the total gain, averaged over the refitted ranker and
        classifier (their gains are on different scales), largest first."""
        shares = []
        for booster in self.components.values():
            gains = pd.Series(booster.feature_importance(importance_type="gain"),
                              index=list(FEATURE_COLUMNS))
            shares.append(gains / gains.sum() if gains.sum() > 0 else gains)
        return (sum(shares) / len(shares)).sort_values(ascending=False)


def _best_iteration(model: lgb.LGBMModel, params: RankerParams) -> int:
    return max(int(model.best_iteration_ or params.n_estimators), 1)
