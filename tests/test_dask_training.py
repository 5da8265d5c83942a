"""The ranker and the demand model fitted on a Dask cluster (`lightgbm.dask`; a local cluster
of two worker processes) against the same fits in this process, on the real four months."""

from dataclasses import replace

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from distributed import LocalCluster
from mlflow import MlflowClient

from features.event_log import EventLog
from features.ingest import read_catalog
from features.store import feature_store
from models import registry
from models.dask_fit import (
    Rows,
    early_stopping_round,
    fit,
    validation_metric,
    validation_scores,
)
from models.recs.artifacts import MODEL_NAME
from models.recs.ranker import FEATURE_COLUMNS, RankerParams, group_sizes
from tests.conftest import features_ready
from training.pricing.fit import fit_demand
from training.recs.examples import fit_ranker, train_ranker
from training.recs.train import VALIDATION_MODEL_TAG, train_recs

# The cluster fits every round up to the cap (no early stopping there): 200 instead of 600
# keeps these tests short; early stopping picked 20 to 100 rounds on these examples.
PARAMS = RankerParams(n_estimators=200)
# Seed noise: the validation model's NDCG@10 over random_state 42, 1, 2, 3, 4 spread from
# 0.3795 to 0.3884 fitted here (sd 0.0036) and from 0.3835 to 0.3900 on the cluster (sd 0.0031).
# Two fits differing only by their seed differ by up to 3 sd of a difference: 0.015.
NDCG_TOLERANCE = 0.015
# The demand model's validation WAPE over random_state 0, 1, 2, 3: 0.671 to 0.702 fitted here
# (sd 0.014), 0.671 to 0.676 on the cluster (0 to 2); 3 sd of a difference: 0.06.
WAPE_TOLERANCE = 0.06


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def trained(tmp_path_factory, online_retail_four_months):
    """Settings on the four months with features built, and the ranker fitted here on two
    cutoffs with its examples, as `train_recs` fits it."""
    settings = features_ready(online_retail_four_months, tmp_path_factory.mktemp("dask") / "data")
    events = EventLog(settings.events_dir).read()
    ranker, examples = train_ranker(events, read_catalog(settings.catalog_path),
                                    feature_store(settings), events["ts"].max().ceil("D"), 2,
                                    PARAMS)
    return settings, ranker, examples


def validated(frame: pd.DataFrame) -> pd.DataFrame:
    """The queries `fit_ranker` validates on: those with a purchase."""
    return frame[frame.groupby("query")["label"].transform("max") > 0]


def ranking_rows(frame: pd.DataFrame, ranking: bool = True) -> Rows:
    return Rows(frame[list(FEATURE_COLUMNS)], frame["label"],
                group_sizes(frame["query"]) if ranking else None)


def test_ranker_fitted_on_the_cluster_scores_like_the_one_fitted_here(cluster, trained):
    _, here, examples = trained
    on_cluster = fit_ranker(examples, replace(PARAMS, dask_scheduler=cluster.scheduler_address))

    valid = validated(examples[-1].frame)
    ndcg = validation_metric("lambdarank", ranking_rows(valid), 10)
    scores = {name: ndcg(ranker.validation_score(valid))
              for name, ranker in (("here", here), ("cluster", on_cluster))}
    print(f"validation NDCG@10: {scores}; rounds here {here.best_iteration}/"
          f"{here.classifier_best_iteration}, on the cluster {on_cluster.best_iteration}/"
          f"{on_cluster.classifier_best_iteration}")
    assert scores["cluster"] == pytest.approx(scores["here"], abs=NDCG_TOLERANCE)
    assert scores["cluster"] > 0.3
    # The same kind of model: one native booster on the same features, holding the rounds
    # picked on the validation month (blended: the ranker's and the classifier's).
    for model in (on_cluster.model, on_cluster.validation_model):
        assert isinstance(model, lgb.Booster)
        assert model.feature_name() == here.model.feature_name() == list(FEATURE_COLUMNS)
    assert on_cluster.validation_model.num_trees() == (on_cluster.best_iteration
                                                       + on_cluster.classifier_best_iteration)
    assert 1 <= on_cluster.best_iteration < PARAMS.n_estimators
    assert 1 <= on_cluster.classifier_best_iteration < PARAMS.n_estimators


@pytest.mark.parametrize(("objective", "metric"), [
    ("lambdarank", "ndcg@10"), ("binary", "binary_logloss"), ("poisson", "poisson"),
])
def test_validation_scores_are_lightgbms_own_and_stop_where_early_stopping_does(
        trained, objective, metric):
    _, _, examples = trained
    train, valid = (validated(e.frame) for e in examples)
    train, valid = (frame[frame["query"].isin(frame["query"].unique()[:150])]
                    for frame in (train, valid))
    train_rows, valid_rows = (ranking_rows(frame, objective == "lambdarank")
                              for frame in (train, valid))
    if objective == "poisson":  # counts with an offset, as the demand model fits them
        train_rows, valid_rows = (replace(rows, init_score=np.linspace(-2, 0, len(rows.X)))
                                  for rows in (train_rows, valid_rows))
    estimator = {"lambdarank": lgb.LGBMRanker, "binary": lgb.LGBMClassifier,
                 "poisson": lgb.LGBMRegressor}[objective]
    params = {**PARAMS.as_lightgbm(objective), "n_estimators": 60, "n_jobs": 1,
              "deterministic": True}
    ranking = {"eval_at": [10]} if objective == "lambdarank" else {}

    recorded = estimator(**params).fit(
        train_rows.X, train_rows.y, **train_rows.extras(), eval_X=(valid_rows.X,),
        eval_y=(valid_rows.y,), **valid_rows.extras("eval_"), **ranking)
    curve = list(validation_scores(recorded.booster_, valid_rows, objective))
    np.testing.assert_allclose(curve, recorded.evals_result_["valid_0"][metric],
                               rtol=1e-9, atol=1e-12)

    stopped = fit(estimator(**params), train_rows, valid_rows, stopping_rounds=5, **ranking)
    assert early_stopping_round(curve, objective == "lambdarank", 5) == stopped.best_iteration_


def test_train_recs_on_a_dask_cluster_registers_the_model_as_a_local_run_does(cluster, trained):
    settings, _, _ = trained
    report = train_recs(settings.model_copy(update={"dask_scheduler": cluster.scheduler_address}),
                        params=PARAMS, cutoffs=2)

    assert report.promoted and report.reason == "no champion yet"
    assert str(registry.champion(MODEL_NAME).version) == report.version
    assert report.metrics["ranker"]["ndcg@10"] > report.metrics["popularity"]["ndcg@10"]
    model = registry.load_booster(registry.version_uri(MODEL_NAME, report.version))
    assert isinstance(model, lgb.Booster) and model.feature_name() == list(FEATURE_COLUMNS)
    run = MlflowClient().get_run(report.run_id)
    # The parameters logged are LightGBM's (the scheduler is not one), the rounds picked.
    assert set(PARAMS.as_lightgbm()) <= set(run.data.params)
    assert "dask_scheduler" not in run.data.params
    assert 1 <= int(run.data.params["best_iteration"]) < PARAMS.n_estimators
    assert {"ranker_ndcg_at_10", "candidate_recall"} <= set(run.data.metrics)
    artifacts = {a.path for a in MlflowClient().list_artifacts(report.run_id)}
    assert {"feature_importance.png", "candidate_state.pkl"} <= artifacts
    probe = registry.load_booster(run.data.tags[VALIDATION_MODEL_TAG])
    assert probe.feature_name() == list(FEATURE_COLUMNS)


def test_demand_model_fitted_on_the_cluster_predicts_like_the_one_fitted_here(
        cluster, online_retail_four_months):
    events = EventLog(online_retail_four_months / "events").read()
    catalog = read_catalog(online_retail_four_months / "catalog.parquet")
    # 300 rounds at most (the model's default cap; training allows 1000): the cluster fits
    # them all, twice over (`FIT_ROUNDS`).
    here = fit_demand(events, catalog, "W", n_estimators=300)
    on_cluster = fit_demand(events, catalog, "W", n_estimators=300,
                            dask_scheduler=cluster.scheduler_address)

    wape = {"here": here.metrics["model"]["wape"], "cluster": on_cluster.metrics["model"]["wape"]}
    print(f"validation WAPE: {wape}; rounds here {here.model.best_iteration}, on the cluster "
          f"{on_cluster.model.best_iteration}")
    assert wape["cluster"] == pytest.approx(wape["here"], abs=WAPE_TOLERANCE)
    assert wape["cluster"] < on_cluster.metrics["last_week"]["wape"]
    predicted = on_cluster.model.predict(on_cluster.model.normalized(on_cluster.panel)
                                         .loc[on_cluster.valid.index])
    assert np.isfinite(predicted).all() and (predicted > 0).all()
    assert isinstance(on_cluster.model.booster, lgb.Booster)
    assert on_cluster.model.booster.feature_name() == here.model.booster.feature_name()
    assert 1 <= on_cluster.model.best_iteration <= 300
