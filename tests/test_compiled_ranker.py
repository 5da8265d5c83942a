"""The ranker's compiled trees (lleaves): the same scores as LightGBM's predict on real
feature rows, one compilation shared by concurrent processes, and the fallback to the
booster when compiling fails. A ranker trained on four months of the real export."""

import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from features.event_log import EventLog
from features.ingest import read_catalog
from features.settings import Settings
from features.store import feature_store
from models import registry
from models.recs.artifacts import MODEL_NAME, load_ranker
from models.recs.compiled import PARITY_TOLERANCE, CompileError, cache_key, compile_booster
from models.recs.ranker import FEATURE_COLUMNS, RankerParams
from tests.conftest import features_ready
from training.recs.examples import HORIZON, build_examples
from training.recs.train import train_recs

REPO_ROOT = Path(__file__).resolve().parents[1]
QUICK = RankerParams(n_estimators=40)


@dataclass(frozen=True)
class Trained:
    settings: Settings
    version: registry.RegisteredVersion
    rows: np.ndarray
    """`feature_matrix` rows of the last month's candidates, as training computed them."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory, online_retail_four_months) -> Trained:
    settings = features_ready(online_retail_four_months,
                              tmp_path_factory.mktemp("compiled") / "data")
    catalog = read_catalog(settings.catalog_path)
    store = feature_store(settings)
    assert train_recs(settings, params=QUICK, cutoffs=2).promoted
    version = registry.champion(MODEL_NAME)
    assert version is not None
    events = EventLog(settings.events_dir).read()
    cutoff = events["ts"].max().ceil("D") - HORIZON
    frame = build_examples(events, catalog, store, pd.Timestamp(cutoff)).frame
    return Trained(settings, version, frame[list(FEATURE_COLUMNS)].to_numpy(dtype=float))


def with_edge_rows(rows: np.ndarray) -> np.ndarray:
    """The real rows, then copies of some with NaN as zero, with infinities (a zero
    divisor gives one), and a row of NaN only."""
    rng = np.random.default_rng(3)
    zeros = np.nan_to_num(rows[:200], nan=0.0)
    infinite = rows[200:400].copy()
    cells = rng.random(infinite.shape) < 0.1
    infinite[cells] = rng.choice([-np.inf, np.inf], int(cells.sum()))
    return np.vstack([rows, zeros, infinite, np.full((1, rows.shape[1]), np.nan)])


def test_compiled_ranker_scores_real_rows_as_lightgbm_does(trained, tmp_path):
    registry.configure(trained.settings)
    ranker = load_ranker(trained.version, compiled_dir=tmp_path)

    assert ranker.compiled is not None
    assert np.isnan(trained.rows).any() and len(trained.rows) > 1000
    rows = with_edge_rows(trained.rows)
    expected = ranker.booster.predict(rows, num_threads=1)
    scores = ranker.predict(rows)
    assert scores.shape == expected.shape
    assert np.max(np.abs(scores - expected)) <= PARITY_TOLERANCE
    assert len(np.unique(np.round(expected, 6))) > 100  # scores that tell rows apart


CHILD = """
import logging, sys
from pathlib import Path
import lightgbm as lgb
import numpy as np
from models.recs.compiled import compile_booster
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
booster = lgb.Booster(model_file=sys.argv[1])
forest = compile_booster(booster, Path(sys.argv[2]))
print("scored", len(forest.predict(np.zeros((3, booster.num_feature())))))
"""


def test_two_processes_compile_a_model_once_and_share_it(trained, tmp_path, caplog):
    registry.configure(trained.settings)
    booster = registry.load_booster(registry.version_uri(MODEL_NAME, trained.version.version))
    model_file = tmp_path / "model.txt"
    booster.save_model(model_file)
    cache = tmp_path / "cache"
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(model_file), str(cache)],
                                 cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(2)]
    outputs = [child.communicate(timeout=300) for child in children]

    assert [child.returncode for child in children] == [0, 0], outputs
    assert all("scored 3" in out for out, _ in outputs)
    assert sum("compiled" in out for out, _ in outputs) == 1  # the other one waited, loaded
    key = cache_key(booster.model_to_string())
    assert sorted(p.name for p in cache.iterdir()) == [f"{key}.lock", f"{key}.o", f"{key}.txt"]
    with caplog.at_level(logging.INFO, logger="models.recs.compiled"):
        forest = compile_booster(booster, cache)  # this process: loaded, not compiled
    assert "compiled" not in caplog.text
    rows = trained.rows[:300]
    assert np.max(np.abs(forest.predict(rows) - booster.predict(rows))) <= PARITY_TOLERANCE


def not_a_directory(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("")
    return tmp_path / "file" / "compiled"


def writable_by_others(tmp_path: Path) -> Path:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    return shared


@pytest.mark.parametrize("cache_dir", [not_a_directory, writable_by_others])
def test_load_ranker_falls_back_to_lightgbm_when_compiling_fails(trained, tmp_path, caplog,
                                                                cache_dir):
    registry.configure(trained.settings)
    with caplog.at_level(logging.WARNING, logger="models.recs.artifacts"):
        ranker = load_ranker(trained.version, compiled_dir=cache_dir(tmp_path))

    assert ranker.compiled is None
    assert "scoring with LightGBM's predict" in caplog.text
    rows = trained.rows[:300]
    assert np.array_equal(ranker.predict(rows), ranker.booster.predict(rows, num_threads=1))


def test_compile_refuses_trees_whose_compiled_scores_differ(tmp_path):
    # lleaves does not implement `zero_as_missing`: zeros would take NaN's branch in
    # LightGBM only. The probe rows must catch it.
    rng = np.random.default_rng(0)
    features = np.round(rng.normal(size=(3000, 6)))
    features[rng.random(features.shape) < 0.2] = np.nan
    labels = (np.nansum(features, axis=1) + rng.normal(size=3000) > 0).astype(int)
    booster = lgb.train({"objective": "binary", "zero_as_missing": True, "verbose": -1,
                         "num_leaves": 15}, lgb.Dataset(features, labels), 30)

    with pytest.raises(CompileError, match="away from LightGBM's"):
        compile_booster(booster, tmp_path)
