import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import db
from cli.main import app
from db import suggestions
from features.settings import get_settings
from training.pricing.evaluate import SWEEP_COLUMNS

runner = CliRunner()


def test_evaluate_recs_ranker_beats_popularity_on_a_real_slice(online_retail_four_months):
    result = runner.invoke(app, [
        "evaluate", "recs", "--events", str(online_retail_four_months / "events"),
        "--split-date", "2011-03-01", "--until", "2011-04-01", "--cutoffs", "2",
        "--extra-seed", "42", "--extra-seed", "7", "--json",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    rows = {row["name"]: row for row in report["rows"]}
    assert list(rows) == ["ranker", "popularity", "repurchase", "als", "item_knn"]
    expected_keys = {"name", "ndcg@10", "recall@20", "hr@10", "coverage", "novel_ndcg@10",
                     "novel_recall@20"}
    assert all(expected_keys <= set(row) for row in rows.values())
    assert rows["ranker"]["ndcg@10"] > rows["popularity"]["ndcg@10"]
    assert rows["ranker"]["novel_ndcg@10"] > rows["popularity"]["novel_ndcg@10"]
    assert rows["ranker"]["users"] > 100
    assert 0 < report["candidate_recall"] <= 1
    # Refitted on the same examples, the default seed reproduces the ranker exactly: what
    # another seed changes is seed noise alone.
    default, again, other = report["seed_runs"]
    assert default["seed"] == again["seed"] == 42 and other["seed"] == 7
    assert default["ndcg@10"] == again["ndcg@10"] == rows["ranker"]["ndcg@10"]
    assert 0 < other["ndcg@10"] <= 1


def test_evaluate_demand_prints_the_model_and_both_baselines(online_retail_four_months):
    result = runner.invoke(app, [
        "evaluate", "demand", "--events", str(online_retail_four_months / "events"),
        "--split-date", "2011-03-01", "--json",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    rows = {row["name"]: row for row in report["rows"]}
    assert list(rows) == ["model", "last_week", "mean_4w"]
    assert rows["model"]["wape"] < rows["last_week"]["wape"]
    assert all(row["mae"] > 0 for row in rows.values())


@pytest.fixture(scope="module")
def small_market(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("market")
    result = runner.invoke(app, ["data", "simulate", "--out", str(out), "--days", "200",
                                 "--users", "300", "--items", "12", "--seed", "5"])
    assert result.exit_code == 0, result.output
    return out


def test_evaluate_pricing_scores_suggestions_against_the_oracle(small_market):
    result = runner.invoke(app, ["evaluate", "pricing", "--sim", str(small_market), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report) == set(SWEEP_COLUMNS) - {"seed"}
    assert report["violations"] == 0
    assert 0 < report["oracle_fraction"] <= 1 + 1e-9
    assert report["suggestions"] + report["skipped"] == 12 * 3
    assert 0 <= report["moved_losing_share"] <= 1
    if report["moved"] == 0:
        assert report["suggestions_profit"] == pytest.approx(report["keep_current_profit"])


def test_evaluate_pricing_sweeps_families_and_seeds(tmp_path):
    result = runner.invoke(app, [
        "evaluate", "pricing", "--family", "isoelastic", "--family", "linear", "--seed", "4",
        "--days", "120", "--items", "6", "--users", "50", "--work-dir", str(tmp_path),
        "--rule-confidence", "50", "--rule-confidence", "90", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert [(row["family"], row["seed"]) for row in report["markets"]] == [
        ("isoelastic", 4), ("linear", 4)]
    assert [row["family"] for row in report["families"]] == ["isoelastic", "linear"]
    assert [(row["family"], row["confidence_percent"]) for row in report["rules"]] == [
        ("isoelastic", 50), ("isoelastic", 90), ("linear", 50), ("linear", 90)]
    assert all(row["violations"] == 0 for row in report["markets"])
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "isoelastic-4-120d-6i-50u", "linear-4-120d-6i-50u"]  # markets kept for a re-run


def test_evaluate_pricing_rejects_an_unknown_family():
    result = runner.invoke(app, ["evaluate", "pricing", "--family", "cubic"])
    assert result.exit_code == 2
    assert "--family must be one of exponential, isoelastic, logit, linear, kinked, got cubic" in (
        result.stderr)


def test_pricing_suggest_stores_a_pending_batch(small_market, tmp_path, monkeypatch):
    monkeypatch.setenv("TAILOR_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    result = runner.invoke(app, [
        "pricing", "suggest", "--events", str(small_market / "events"),
        "--catalog", str(small_market / "catalog.csv"),
        "--channels", str(small_market / "channels.csv"), "--json",
    ])
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["suggestions"] and set(report["suggestions"][0]) == {
        "item_id", "channel", "current_price", "suggested_price", "expected_profit_current",
        "expected_profit_suggested", "bound_by", "explanation"}
    engine = db.engine_for(f"sqlite:///{tmp_path / 'data' / 'tailor.db'}")
    stored = suggestions.list_suggestions(engine, status="pending", batch_id=report["batch_id"])
    engine.dispose()
    assert len(stored) == len(report["suggestions"])


def test_pricing_suggest_items_prices_just_those_with_the_champion(small_market, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setenv("TAILOR_DATA_DIR", str(tmp_path / "data"))
    policy = tmp_path / "approval_policy.yaml"
    policy.write_text("max_change_percent: 100\n")
    monkeypatch.setenv("TAILOR_APPROVAL_POLICY", str(policy))
    get_settings.cache_clear()
    files = ["--events", str(small_market / "events"), "--catalog",
             str(small_market / "catalog.csv"), "--channels", str(small_market / "channels.csv")]
    first = runner.invoke(app, ["pricing", "suggest", *files, "--json"])
    targeted = runner.invoke(app, ["pricing", "suggest", *files, "--items", "P0002, P0005",
                                   "--json"])
    unknown = runner.invoke(app, ["pricing", "suggest", *files, "--items", "P9999"])
    no_policy = runner.invoke(app, ["pricing", "suggest", *files, "--approval-policy",
                                    str(tmp_path / "nowhere.yaml")])
    get_settings.cache_clear()
    assert first.exit_code == 0 and targeted.exit_code == 0, targeted.output
    report = json.loads(targeted.stdout.strip().splitlines()[-1])
    assert {row["item_id"] for row in report["suggestions"]} == {"P0002", "P0005"}
    engine = db.engine_for(f"sqlite:///{tmp_path / 'data' / 'tailor.db'}")
    batch = suggestions.get_batch(engine, report["batch_id"])
    first_batch = suggestions.list_suggestions(
        engine, batch_id=json.loads(first.stdout.strip().splitlines()[-1])["batch_id"])
    engine.dispose()
    assert batch["model_version"] == "demand-model:1"  # the champion: nothing was retrained
    # The policy of TAILOR_APPROVAL_POLICY approved every move with a confident gain; the
    # rest waited (and the targeted run's batch superseded P0002's and P0005's).
    for row in first_batch:
        confident = row["suggested_price"] != row["current_price"] and (
            row["expected_profit_gain_low"] or 0) > 0
        assert (row["status"] == "approved") == confident, row
        assert (row["reviewed_by"] == "policy") == confident, row
    assert no_policy.exit_code == 2
    assert "nowhere.yaml: file not found" in no_policy.stderr
    assert unknown.exit_code == 2
    assert "--items: no sales before" in unknown.stderr and "P9999" in unknown.stderr
