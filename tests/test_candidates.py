import pandas as pd
import pytest

from features.schemas import validate_events
from models.recs.candidates import (
    CandidateConfig,
    CovisitSource,
    NextOrderSource,
    PopularSource,
    RepurchaseSource,
    fit_sources,
    generate_candidates,
    purchases_before,
    recency_weights,
)
from tests.conftest import event

CUTOFF = pd.Timestamp("2011-03-01", tz="UTC")


def purchases(*rows) -> pd.DataFrame:
    return purchases_before(validate_events(pd.DataFrame(list(rows))), CUTOFF)


def test_recency_weights_halve_every_half_life():
    stamps = pd.Series(pd.to_datetime(["2011-03-01", "2011-01-30", "2010-12-01"], utc=True))
    assert recency_weights(stamps, CUTOFF, 30).round(4).tolist() == [1.0, 0.5, 0.125]


def test_repurchase_source_ranks_by_recency_weighted_frequency_and_rhythm():
    history = purchases(
        event("1", "2011-02-27", item_id="old-favourite"),
        event("2", "2011-01-28", item_id="old-favourite"),
        event("3", "2010-12-29", item_id="old-favourite"),
        event("4", "2011-02-28", item_id="recent-once"),
        event("5", "2010-06-01", item_id="long-ago"),
        event("6", "2011-02-28", user_id="u2", item_id="other-user"),
    )
    source = RepurchaseSource().fit(history, CUTOFF, CandidateConfig(half_life_days=30))
    proposed = source.recommend(["u1"]).set_index("item_id")
    assert proposed.index.tolist() == ["old-favourite", "recent-once", "long-ago"]
    assert proposed.loc["old-favourite", "gap_days"] == 30
    assert proposed.loc["old-favourite", "due_ratio"] == pytest.approx(2 / 30)
    assert pd.isna(proposed.loc["recent-once", "gap_days"])
    assert source.item_repeat_rate["old-favourite"] == 1.0


def test_popular_source_counts_distinct_recent_buyers_only():
    history = purchases(
        event("1", "2011-02-20", user_id="a", item_id="hit"),
        event("2", "2011-02-21", user_id="b", item_id="hit"),
        event("3", "2011-02-22", user_id="a", item_id="repeat"),
        event("4", "2011-02-23", user_id="a", item_id="repeat"),
        event("5", "2010-11-01", user_id="c", item_id="stale"),
    )
    source = PopularSource().fit(history, CUTOFF, CandidateConfig(popular_window_days=30))
    assert source.ranking.to_dict() == {"hit": 2, "repeat": 1}


def test_covisit_source_proposes_items_bought_in_the_same_orders():
    history = purchases(
        event("1", "2011-02-01", user_id="a", item_id="yarn", session_id="o1"),
        event("2", "2011-02-01", user_id="a", item_id="needles", session_id="o1"),
        event("3", "2011-02-02", user_id="b", item_id="yarn", session_id="o2"),
        event("4", "2011-02-02", user_id="b", item_id="needles", session_id="o2"),
        event("5", "2011-02-03", user_id="c", item_id="fabric", session_id="o3"),
        event("6", "2011-02-04", user_id="d", item_id="yarn", session_id="o4"),
    )
    proposed = CovisitSource().fit(history, CUTOFF, CandidateConfig()).recommend(["d"])
    assert proposed["item_id"].tolist() == ["needles"]


def test_next_order_source_proposes_what_followed_the_users_last_orders():
    history = purchases(
        # Two customers whose pattern order is followed by a yarn order.
        event("1", "2011-01-01", user_id="a", item_id="pattern", session_id="a1"),
        event("2", "2011-01-20", user_id="a", item_id="yarn", session_id="a2"),
        event("3", "2011-01-02", user_id="b", item_id="pattern", session_id="b1"),
        event("4", "2011-01-25", user_id="b", item_id="yarn", session_id="b2"),
        event("5", "2011-01-25", user_id="b", item_id="buttons", session_id="b2"),
        # Bought in the same order as the pattern, never after it: not a next-order item.
        event("6", "2011-01-03", user_id="c", item_id="pattern", session_id="c1"),
        event("7", "2011-01-03", user_id="c", item_id="fabric", session_id="c1"),
        # The user to recommend for: an old fabric order, then a pattern order.
        event("8", "2010-12-01", user_id="d", item_id="fabric", session_id="d1"),
        event("9", "2011-02-10", user_id="d", item_id="pattern", session_id="d2"),
    )
    source = NextOrderSource().fit(history, CUTOFF, CandidateConfig())
    # Both pattern orders that have a next order (a1, b1) led to yarn; c1 and d2 have none.
    assert source.transitions[source.matrix.items.get_loc("pattern"),
                              source.matrix.items.get_loc("yarn")] == pytest.approx(1.0)
    proposed = source.recommend(["d"]).set_index("item_id")
    assert proposed.index.tolist() == ["yarn", "buttons", "pattern"]
    assert proposed.loc["yarn", "score"] == pytest.approx(1.0)
    assert proposed.loc["buttons", "score"] == pytest.approx(0.5)
    # d's older fabric order (weight 0.5) was followed by a pattern order every time.
    assert proposed.loc["pattern", "score"] == pytest.approx(0.5 * 1.0)


def test_generate_candidates_unions_sources_and_never_looks_past_the_cutoff():
    history = validate_events(pd.DataFrame([
        event(str(n), f"2011-02-{n:02d}", user_id=f"u{n % 3}", item_id=f"i{n % 5}",
              session_id=f"o{n}") for n in range(1, 25)
    ] + [event("future", "2011-03-05", user_id="u1", item_id="future-item")]))
    sources = fit_sources(purchases_before(history, CUTOFF), CUTOFF)
    candidates = generate_candidates(sources, ["u0", "u1", "unknown"])
    assert "future-item" not in set(candidates["item_id"])
    assert not candidates.duplicated(["user_id", "item_id"]).any()
    for name in ("repurchase", "covisit", "als", "next_order", "popular"):
        assert {f"{name}_score", f"{name}_rank"} <= set(candidates.columns)
    # An unknown user still gets the popular items, and nothing personal.
    unknown = candidates[candidates["user_id"] == "unknown"]
    assert len(unknown) > 0 and unknown["repurchase_rank"].isna().all()
    assert (candidates["n_sources"] >= 1).all()
    # The matrix sources share one user x item matrix: built once, pickled once.
    assert sources["covisit"].matrix is sources["als"].matrix is sources["next_order"].matrix
