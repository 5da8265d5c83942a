"""The LightGBM LambdaRank ranker over candidates and their `recs_ranker_v1` features."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from models.candidates import SOURCES

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


def _category_share(names, shares, category) -> float:
    if names is None or category is None:
        return 0.0
    for name, share in zip(names, shares, strict=True):
        if name == category:
            return float(share)
    return 0.0


def feature_matrix(rows: Mapping[str, Any], item_categories: Sequence) -> np.ndarray:
    """The model's features, one row per candidate, in `FEATURE_COLUMNS` order: a float64
    C-ordered matrix, what the booster predicts on without a copy (this runs on every
    request as well as in training).

    `rows` maps column names to one value per row (a DataFrame, or numpy columns): the
    candidate columns and the `recs_ranker_v1` features, including the user's category
    names and shares; a column it lacks is NaN. `item_categories` is each row's category.
    """
    matrix = np.full((len(item_categories), len(FEATURE_COLUMNS)), np.nan)
    for position, name in enumerate(BASE_FEATURES):
        if name in rows:
            matrix[:, position] = _floats(rows[name])
    column = dict(zip(BASE_FEATURES, matrix.T[:len(BASE_FEATURES)], strict=True))
    orders = _positive(column["user_frequency"])
    times_bought = column["user_item_times_bought"]
    tenure = column["user_tenure_days"]
    with np.errstate(divide="ignore", invalid="ignore"):  # as pandas: inf and NaN, silently
        derived = {
            "user_category_share": [
                _category_share(names, shares, category)
                for names, shares, category in zip(rows["user_category_names"],
                                                   rows["user_category_shares"],
                                                   item_categories, strict=True)],
            "user_item_share_of_orders": np.nan_to_num(times_bought, nan=0.0) / orders,
            # How far into its usual repurchase cycle the pair is (1 = one average gap since).
            "user_item_due_ratio": column["user_item_days_since_last_purchase"] / (
                tenure / _positive(times_bought)),
            "user_days_per_order": tenure / orders,
        }
    for position, name in enumerate(DERIVED_FEATURES, start=len(BASE_FEATURES)):
        matrix[:, position] = derived[name]
    return matrix


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
    """LightGBM LambdaRank hyper-parameters."""

    n_estimators: int = 600
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 50
    subsample: float = 0.8
    subsample_freq: int = 1
    colsample_bytree: float = 0.8
    reg_lambda: float = 1.0
    random_state: int = 42
    extra: dict = field(default_factory=dict)

    def as_lightgbm(self) -> dict:
        params = {k: v for k, v in self.__dict__.items() if k != "extra"}
        return {**params, "objective": "lambdarank", "verbose": -1, "n_jobs": 2, **self.extra}


class Ranker:
    """LGBMRanker with early stopping on validation NDCG@10, then refitted on all data."""

    def __init__(self, params: RankerParams | None = None):
        self.params = params or RankerParams()
        self.model: lgb.LGBMRanker | None = None
        self.best_iteration: int | None = None

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame, label: str = "label") -> "Ranker":
        """Fit on `train`, pick the number of trees on `valid`, refit on both.

        Both frames hold `user_id`, the feature columns and `label`, sorted by query.
        """
        probe = lgb.LGBMRanker(**self.params.as_lightgbm())
        probe.fit(
            train[list(FEATURE_COLUMNS)], train[label], group=group_sizes(train["query"]),
            eval_X=(valid[list(FEATURE_COLUMNS)],), eval_y=(valid[label],),
            eval_group=[group_sizes(valid["query"])], eval_at=[10],
            callbacks=[lgb.early_stopping(50, verbose=False)],
        )
        self.validation_model = probe  # never saw `valid`'s labels: for honest validation
        self.best_iteration = max(int(probe.best_iteration_ or self.params.n_estimators), 1)
        both = pd.concat([train, valid], ignore_index=True)
        final = {**self.params.as_lightgbm(), "n_estimators": self.best_iteration}
        self.model = lgb.LGBMRanker(**final)
        self.model.fit(both[list(FEATURE_COLUMNS)], both[label], group=group_sizes(both["query"]))
        return self

    def score(self, features: pd.DataFrame) -> np.ndarray:
        """Ranking scores (higher first) of feature rows."""
        return self.model.predict(features[list(FEATURE_COLUMNS)])

    def validation_score(self, features: pd.DataFrame) -> np.ndarray:
        """Scores of the model fitted before the validation cutoff (out of sample there)."""
        return self.validation_model.predict(features[list(FEATURE_COLUMNS)])

    def feature_importance(self) -> pd.Series:
        """Total gain per feature, largest first."""
        gains = self.model.booster_.feature_importance(importance_type="gain")
        return pd.Series(gains, index=list(FEATURE_COLUMNS)).sort_values(ascending=False)
