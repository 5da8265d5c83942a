import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app
from features.settings import get_settings
from tests.conftest import event

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TAILOR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TAILOR_REDIS_URL", raising=False)
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


def invoke(*args: str) -> str:
    """Run a command that must succeed; its output with white space folded."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_cli_runs_the_main_job_on_a_real_slice(data_dir, online_retail_slice):
    imported = invoke("data", "import-online-retail", str(online_retail_slice))
    assert "19,529" in imported and "rejected: non-positive UnitPrice" in imported
    assert "user_item_stats" in invoke("features", "build")
    assert "recs_ranker_v1" in invoke("features", "apply")
    assert "sqlite online store" in invoke("features", "materialize", "--end", "2010-12-10")

    shown = invoke("features", "online", "17850", "85123A", "--as-of", "2010-12-10")
    # Customer 17850 bought item 85123A on 17 order lines between Dec 1 and Dec 9 (csv count).
    assert "│ user_item_times_bought │ 17 │" in shown


def test_cli_import_events_reports_bad_rows_by_field_and_exits_nonzero(data_dir, tmp_path):
    path = tmp_path / "events.csv"
    pd.DataFrame([event("a", "2011-01-01"), event("b", "2011-01-01", unit_price=-2.0)]).to_csv(
        path, index=False
    )
    result = runner.invoke(app, ["data", "import-events", str(path)])
    assert result.exit_code == 2
    assert "row 1, field 'unit_price'" in result.output
    assert not (data_dir / "events").exists()


def test_cli_import_events_twice_writes_once(data_dir, tmp_path):
    path = tmp_path / "events.parquet"
    pd.DataFrame([event("a", "2011-01-01"), event("b", "2011-01-02")]).to_parquet(path)
    assert "written │ 2" in invoke("data", "import-events", str(path))
    again = invoke("data", "import-events", str(path))
    assert "written │ 0" in again and "already in the log │ 2" in again


def test_cli_simulate_writes_a_market_that_imports_cleanly(data_dir, tmp_path):
    shown = invoke("data", "simulate", "--out", str(tmp_path / "sim"), "--days", "20",
                   "--users", "30", "--items", "5", "--seed", "3")
    assert "│ channels │ 3 │" in shown
    catalog = pd.read_csv(tmp_path / "sim" / "catalog.csv")
    assert len(catalog) == 5
    assert "items written │ 5" in invoke("data", "import-catalog",
                                         str(tmp_path / "sim" / "catalog.csv"))
