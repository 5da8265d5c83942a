
import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from features.settings import Settings
from models import registry
from models.ranker import RankerParams
from training.recs_training import MODEL_NAME, train_recs


def test_decide_promotion_needs_a_strictly_better_challenger():
    assert registry.decide_promotion("ndcg@10", 0.3, None).promote
    assert registry.decide_promotion("ndcg@10", 0.31, 0.30).promote
    tie = registry.decide_promotion("ndcg@10", 0.30, 0.30)
    assert not tie.promote and "not better" in tie.reason
    assert registry.decide_promotion("wape", 0.2, 0.3, higher_is_better=False).promote


def test_train_recs_promotes_the_first_model_and_keeps_it_over_a_worse_one(feature_ready_settings):
    first = train_recs(feature_ready_settings, cutoffs=2)
    assert first.promoted and first.reason == "no champion yet"
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
