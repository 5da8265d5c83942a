import math

import pytest

from training.recs.metrics import evaluate_lists, hit_at_k, ndcg_at_k, recall_at_k


def test_ndcg_at_k_is_one_for_a_perfect_list_and_discounts_lower_hits():
    assert ndcg_at_k(["a", "b", "x"], {"a", "b"}, 10) == pytest.approx(1.0)
    # One hit at rank 2 of two relevant items: (1/log2 3) / (1 + 1/log2 3).
    expected = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(["x", "a", "y"], {"a", "b"}, 10) == pytest.approx(expected)
    assert ndcg_at_k(["x"] * 10 + ["a"], {"a"}, 10) == 0.0


def test_recall_and_hit_count_only_the_first_k():
    ranked = ["x", "a", "y", "b"]
    assert recall_at_k(ranked, {"a", "b", "c", "d"}, 2) == 0.25
    assert hit_at_k(ranked, {"b"}, 3) == 0.0
    assert hit_at_k(ranked, {"b"}, 4) == 1.0


def test_evaluate_lists_averages_over_users_with_truth_and_counts_coverage():
    lists = {"u1": ["a", "b"], "u2": ["c"], "u3": ["a"]}
    truth = {"u1": {"a"}, "u2": {"z"}, "u3": set()}
    metrics = evaluate_lists(lists, truth, catalog_size=4)
    assert metrics["users"] == 2  # u3 bought nothing
    assert metrics["hr@10"] == 0.5
    assert metrics["ndcg@10"] == pytest.approx(0.5)
    assert metrics["coverage"] == 0.75  # a, b, c of 4 items


def test_evaluate_lists_counts_a_user_without_a_list_as_a_miss():
    metrics = evaluate_lists({}, {"u1": {"a"}}, catalog_size=1)
    assert (metrics["ndcg@10"], metrics["recall@20"], metrics["users"]) == (0.0, 0.0, 1)
