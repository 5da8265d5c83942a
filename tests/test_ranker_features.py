"""The ranker's feature matrix: derived features, and one result for frames and columns."""

from collections import ChainMap

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


def test_category_share_the_same_for_one_users_lists_on_every_row_or_a_copy_per_row():
    """Serving repeats one user's lists (the same objects) on all rows; training has rows of
    many users: one lookup table per user, or one per row, must agree."""
    names, shares = ["toys", "kitchen", "toys"], [0.6, 0.3, 0.1]  # toys twice: first share
    categories = np.array(["toys", "garden", None, "kitchen"], dtype=object)
    shared = {"user_category_names": np.empty(4, dtype=object),
              "user_category_shares": np.empty(4, dtype=object)}
    shared["user_category_names"].fill(names)
    shared["user_category_shares"].fill(shares)
    copies = {"user_category_names": [list(names) for _ in range(4)],
              "user_category_shares": [list(shares) for _ in range(4)]}
    mixed = {"user_category_names": [names, None, list(names), names],
             "user_category_shares": [shares, None, list(shares), shares]}
    share = FEATURE_COLUMNS.index("user_category_share")

    values = [feature_matrix(rows, categories)[:, share] for rows in (shared, copies, mixed)]

    assert values[0].tolist() == [0.6, 0.0, 0.0, 0.3]
    assert values[1].tolist() == values[0].tolist()
    assert values[2].tolist() == [0.6, 0.0, 0.0, 0.3]


def test_feature_matrix_of_a_chain_of_mappings_equals_it_merged():
    """Serving chains the online, item and candidate columns: the first mapping holding a
    column gives it, a column none holds is NaN."""
    frame = examples()
    columns = {name: values.to_numpy() for name, values in frame.items()}
    online = {name: columns[name] for name in ("user_frequency", "user_tenure_days")}
    shadowed = {"user_frequency": np.zeros(3), "repurchase_score": columns["repurchase_score"]}
    rest = {name: values for name, values in columns.items() if name not in online}
    categories = frame["item_id"].map(CATEGORIES).to_numpy()

    chained = feature_matrix(ChainMap(online, shadowed, rest), categories)

    np.testing.assert_array_equal(chained, feature_matrix(columns, categories))
    assert np.isnan(chained[:, FEATURE_COLUMNS.index("covisit_score")]).all()
