"""The approval policy: suggestions inside its low-risk envelope are approved as their batch is
stored, by `policy`, with an audit entry saying why; everything else stays pending. On a
SQLite file and on the real PostgreSQL (`empty_database`)."""

import math
import re

import pandas as pd
import pytest

from db import migrate
from db.policy import ApprovalPolicy, ApprovalPolicyError, load_approval_policy
from db.reviews import DecisionConflict, decide, list_decisions
from db.suggestions import list_suggestions, save_batch
from models.pricing.guardrails import Guardrails
from tests.conftest import REPO_ROOT
from tests.test_serving_prices import offer, optimized

# (item, channel, category, current price, suggested price, low end of the gain's interval)
CASES = {
    "small rise, confident gain": ("a", "web", "sewing", 10.00, 10.40, 0.5),
    "small cut, confident gain": ("b", "web", "sewing", 10.00, 9.70, 0.2),
    "move beyond 5%": ("c", "web", "sewing", 10.00, 10.80, 2.0),
    "gain not confident": ("d", "web", "sewing", 10.00, 10.30, -0.1),
    "no interval": ("e", "web", "sewing", 10.00, 10.30, math.nan),
    "price kept": ("f", "web", "sewing", 10.00, 10.00, 0.0),
    "excluded category": ("g", "web", "knitting", 10.00, 10.30, 1.0),
    "excluded item": ("h", "web", "sewing", 10.00, 10.30, 1.0),
    "excluded channel": ("i", "etsy", "sewing", 10.00, 10.30, 1.0),
}
APPROVED = {"small rise, confident gain", "small cut, confident gain"}
POLICY = ApprovalPolicy(exclude_items=frozenset({"h"}), exclude_categories=frozenset({"knitting"}),
                        exclude_channels=frozenset({"etsy"}))


def suggestions_frame() -> pd.DataFrame:
    """One optimizer row per case, its prices and gain interval set to the case's."""
    frame = optimized([offer(item, channel, 10.0) for item, channel, *_ in CASES.values()],
                      "demand-model:1").suggestions
    cases = pd.DataFrame(CASES.values(), columns=["item_id", "channel", "category", "current",
                                                  "suggested", "gain_low"])
    frame = frame.merge(cases, on=["item_id", "channel"], validate="one_to_one")
    frame["current_price"], frame["suggested_price"] = frame.pop("current"), frame["suggested"]
    frame["expected_profit_gain_low"] = frame.pop("gain_low")
    frame["expected_profit_gain_high"] = frame["expected_profit_gain_low"] + 1
    frame["price_floor"], frame["price_ceiling"] = 5.0, 20.0
    return frame.drop(columns="suggested")


def store(engine, policy: ApprovalPolicy | None) -> dict[str, dict]:
    frame = suggestions_frame()
    categories = dict(zip(frame["item_id"], frame.pop("category"), strict=True))
    batch_id = save_batch(engine, frame, None, "demand-model:1",
                          Guardrails().model_dump(mode="json"), categories, policy)
    stored = {row["item_id"]: row for row in list_suggestions(engine, batch_id=batch_id)}
    return {case: stored[item] for case, (item, *_) in CASES.items()}


def test_the_policy_approves_exactly_the_suggestions_inside_its_envelope(empty_database):
    migrate(empty_database)
    stored = store(empty_database, POLICY)

    assert {case for case, row in stored.items() if row["status"] == "approved"} == APPROVED
    assert {row["status"] for case, row in stored.items() if case not in APPROVED} == {"pending"}
    for case in APPROVED:
        row = stored[case]
        assert row["reviewed_by"] == "policy"
        assert row["approved_price"] == row["suggested_price"]
        [entry] = list_decisions(empty_database, suggestion_id=row["id"])
        assert (entry["actor"], entry["action"], entry["price_after"]) == (
            "policy", "approved", row["suggested_price"])
        assert "approval policy: price" in entry["reason"]
        assert "within ±5%" in entry["reason"]
        with pytest.raises(DecisionConflict, match="approved by policy"):
            decide(empty_database, row["id"], "reject", "alice", reason="too late")
    waiting = stored["gain not confident"]
    assert list_decisions(empty_database, suggestion_id=waiting["id"]) == []
    assert decide(empty_database, waiting["id"], "approve", "alice")["status"] == "approved"


def test_without_a_policy_every_suggestion_waits(empty_database):
    migrate(empty_database)
    assert {row["status"] for row in store(empty_database, None).values()} == {"pending"}


def test_a_policy_can_be_limited_to_price_cuts(empty_database):
    migrate(empty_database)
    stored = store(empty_database, POLICY.model_copy(update={"directions": ("down",)}))
    assert {case for case, row in stored.items() if row["status"] == "approved"} == {
        "small cut, confident gain"}


def test_the_example_file_is_the_default_policy():
    assert load_approval_policy(REPO_ROOT / "approval_policy.example.yaml") == ApprovalPolicy()


@pytest.mark.parametrize(("text", "field"), [
    ("max_change_percent: 0", "max_change_percent"),
    ("min_gain_low: -1", "min_gain_low"),
    ("directions: [sideways]", "directions[0]"),
    ("exclude_item: [a]", "exclude_item"),
])
def test_a_bad_policy_file_names_the_field(tmp_path, text, field):
    path = tmp_path / "approval_policy.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ApprovalPolicyError, match=re.escape(f"field '{field}'")) as error:
        load_approval_policy(path)
    assert str(path) in str(error.value)


def test_a_missing_policy_file_is_named(tmp_path):
    with pytest.raises(ApprovalPolicyError, match=r"nowhere\.yaml: file not found"):
        load_approval_policy(tmp_path / "nowhere.yaml")
