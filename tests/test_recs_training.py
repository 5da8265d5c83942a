
import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from features.settings import Settings
from models import registry
from models.recs.artifacts import MODEL_NAME
from models.recs.ranker import RankerParams, blend_boosters
from training.recs.train import stage_labels, train_recs


def test_decide_promotion_needs_a_strictly_better_challenger():
    def champion(score):
        return registry.ChampionScore("1", score)

    assert registry.decide_promotion("ndcg@10", 0.3, None).promote
    assert registry.decide_promotion("ndcg@10", 0.31, champion(0.30)).promote
    tie = registry.decide_promotion("ndcg@10", 0.30, champion(0.30))
    assert not tie.promote and "not better" in tie.reason
    assert registry.decide_promotion("wape", 0.2, champion(0.3), higher_is_better=False).promote
    assert not registry.decide_promotion("wape", 0.3, champion(0.2),
                                         higher_is_better=False).promote


def test_decide_promotion_replaces_an_incomparable_champion_and_says_why():
    incomparable = registry.ChampionScore("3", None, "champion v3 predicts 'D' periods")
    decision = registry.decide_promotion("wape", 0.9, incomparable, higher_is_better=False)
    assert decision.promote and decision.reason == "champion v3 predicts 'D' periods"


def test_train_recs_promotes_the_first_model_and_keeps_it_over_a_worse_one(feature_ready_settings):
    steps = []
    first = train_recs(feature_ready_settings, cutoffs=2, on_stage=lambda: steps.append(1))
    assert first.promoted and first.reason == "no champion yet"
    assert len(steps) == len(stage_labels(2))
    timed = MlflowClient().get_run(first.run_id).data.metrics
    for stage in ("read", "sources", "candidates", "frames", "fits", "evaluation",
                  "serving_state", "logging"):
        assert timed[f"stage_{stage}_seconds"] > 0
        assert 100 < timed[f"stage_{stage}_peak_rss_mb"] < 20_000  # MB
    assert first.metrics["ranker"]["ndcg@10"] > first.metrics["popularity"]["ndcg@10"]
    assert str(registry.champion(MODEL_NAME).version) == first.version

    stump = RankerParams(n_estimators=1, num_leaves=2, learning_rate=0.01)
    second = train_recs(feature_ready_settings, params=stump, cutoffs=2)

    assert not second.promoted
    assert "not better" in second.reason
    assert second.champion_score > second.metrics["ranker"]["ndcg@10"]
    # Same log, same validation month: the champion is scored by its pre-refit model, which
    # never saw that month's labels, so it scores what it scored as the challenger.
    assert second.champion_score == pytest.approx(first.metrics["ranker"]["ndcg@10"])
    assert str(registry.champion(MODEL_NAME).version) == first.version
    run = MlflowClient().get_run(second.run_id)
    assert run.data.tags["promoted"] == "false"
    assert run.data.tags["promotion_reason"] == second.reason
    assert {"ranker_ndcg_at_10", "repurchase_ndcg_at_10", "als_recall_at_20",
            "candidate_recall"} <= set(run.data.metrics)
    assert float(run.data.params["blend_weight"]) >= 0
    assert int(run.data.params["classifier_best_iteration"]) >= 1
    artifacts = {a.path for a in MlflowClient().list_artifacts(first.run_id)}
    assert {"feature_importance.png", "candidate_state.pkl"} <= artifacts
    store = feature_ready_settings.mlflow_dir / "mlflow.db"
    assert mlflow.get_tracking_uri() == f"sqlite:///{store}" and store.exists()


def test_configure_leaves_no_tracking_uri_behind_for_the_next_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = registry.configure(Settings(data_dir=tmp_path / "a"))
    second = registry.configure(Settings(data_dir=tmp_path / "b"))
    assert first != second and second.endswith("b/mlflow/mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert registry.configure(Settings(data_dir=tmp_path / "c")) == "http://127.0.0.1:5000"


def test_train_recs_replaces_a_champion_trained_on_other_features(feature_ready_settings):
    registry.configure(feature_ready_settings)
    rng = np.random.default_rng(0)
    features = pd.DataFrame(rng.random((200, 2)), columns=["old_a", "old_b"])
    old = lgb.train({"objective": "regression", "verbose": -1},
                    lgb.Dataset(features, rng.random(200)), num_boost_round=2)
    registry.use_experiment(MODEL_NAME, feature_ready_settings)
    with mlflow.start_run():
        info = mlflow.lightgbm.log_model(old, name="model", registered_model_name=MODEL_NAME)
    registry.promote(MODEL_NAME, str(info.registered_model_version))

    report = train_recs(feature_ready_settings, cutoffs=2)

    assert report.promoted and report.champion_score is None
    assert "trained on other features" in report.reason
    assert str(registry.champion(MODEL_NAME).version) == report.version


def test_blended_booster_scores_the_ranker_plus_the_weighted_classifier_log_odds():
    rng = np.random.default_rng(3)
    features = pd.DataFrame(rng.normal(size=(1200, 4)), columns=["a", "b", "c", "d"])
    labels = (features["a"] + features["b"] * rng.normal(size=1200) > 0.5).astype(int)
    ranker = lgb.LGBMRanker(n_estimators=12, verbose=-1).fit(
        features, labels, group=np.full(60, 20)).booster_
    classifier = lgb.LGBMClassifier(n_estimators=9, verbose=-1).fit(features, labels).booster_

    blended = blend_boosters(ranker, classifier, 0.37)

    expected = ranker.predict(features) + 0.37 * classifier.predict(features, raw_score=True)
    np.testing.assert_allclose(blended.predict(features), expected, rtol=0, atol=1e-12)
    assert blended.num_trees() == ranker.num_trees() + classifier.num_trees()
    reloaded = lgb.Booster(model_str=blended.model_to_string())
    np.testing.assert_array_equal(reloaded.predict(features), blended.predict(features))
    other = lgb.LGBMClassifier(n_estimators=2, verbose=-1).fit(
        features.rename(columns={"d": "e"}), labels).booster_
    with pytest.raises(ValueError, match="different features"):
        blend_boosters(ranker, other, 1.0)
