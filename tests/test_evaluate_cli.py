import json

from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def test_evaluate_recs_ranker_beats_popularity_on_a_real_slice(online_retail_four_months):
    result = runner.invoke(app, [
        "evaluate", "recs", "--events", str(online_retail_four_months / "events"),
        "--split-date", "2011-03-01", "--until", "2011-04-01", "--cutoffs", "2", "--json",
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


def test_evaluate_demand_rejects_an_unknown_period(online_retail_four_months):
    result = runner.invoke(app, [
        "evaluate", "demand", "--events", str(online_retail_four_months / "events"),
        "--split-date", "2011-03-01", "--period", "M",
    ])
    assert result.exit_code == 2
    assert "--period must be W or D" in result.output
