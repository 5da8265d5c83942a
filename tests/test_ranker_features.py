"""The ranker's feature matrix: derived features, and one result for frames and columns."""

import numpy as np
import pandas as pd

from models.recs.ranker import FEATURE_COLUMNS, feature_matrix, ranking_features

CATEGORIES = pd.Series({"i1": "toys", "i2": "kitchen", "i3": "garden"})


def examples() -> pd.DataFrame:
    shares = (["toys", "kitchen"], [0.7, 0.3])
    return pd.DataFrame({
        "user_id": ["u1", "u1", "u2"],
        "item_id": ["i1", "i3", "i2"],
        "repurchase_score": [1.5, np.nan, 0.2],
        "user_frequency": [4.0, 4.0, 0.0],
        "user_item_times_bought": [2.0, np.nan, 1.0],
        "user_tenure_days": [100.0, 100.0, 10.0],
        "user_item_days_since_last_purchase": [30.0, np.nan, 5.0],
        "user_category_names": [shares[0], shares[0], None],
        "user_category_shares": [shares[1], shares[1], None],
    })


def test_ranking_features_derive_ratios_and_category_share():
    features = ranking_features(examples(), CATEGORIES)

    assert list(features.columns) == list(FEATURE_COLUMNS)
    first, unbought, no_orders = (features.iloc[row] for row in range(3))
    assert first["repurchase_score"] == 1.5
    assert first["user_category_share"] == 0.7
    assert first["user_item_share_of_orders"] == 0.5
    assert first["user_item_due_ratio"] == 30 / (100 / 2)
    assert first["user_days_per_order"] == 25
    assert unbought["user_category_share"] == 0.0  # garden: a category the user never bought
    assert unbought["user_item_share_of_orders"] == 0.0
    assert np.isnan(unbought["repurchase_score"]) and np.isnan(unbought["covisit_score"])
    assert no_orders["user_category_share"] == 0.0  # no category shares stored
    assert np.isnan(no_orders["user_days_per_order"])  # no orders: the ratio means nothing


def test_feature_matrix_of_numpy_columns_equals_the_training_frame():
    frame = examples()
    columns = {name: values.to_numpy() for name, values in frame.items()}

    served = feature_matrix(columns, frame["item_id"].map(CATEGORIES).to_numpy())

    assert served.flags.c_contiguous and served.dtype == np.float64
    np.testing.assert_array_equal(served, ranking_features(frame, CATEGORIES).to_numpy())
