import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app
from features.event_log import EventLog
from features.ingest import upsert_catalog
from features.settings import get_settings
from tests.conftest import SAMPLE_CATALOG, SAMPLE_EVENTS, event

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


def test_cli_simulate_writes_a_market_of_the_chosen_demand_family(data_dir, tmp_path):
    shown = invoke("data", "simulate", "--out", str(tmp_path / "sim"), "--days", "20",
                   "--users", "30", "--items", "5", "--seed", "3", "--family", "isoelastic")
    assert "│ demand family │ isoelastic │" in shown
    truth = pd.read_parquet(tmp_path / "sim" / "ground_truth.parquet")
    assert (truth["family"] == "isoelastic").all() and len(truth) == 15
    prices = pd.read_csv(tmp_path / "sim" / "channel_prices.csv")
    assert list(prices.columns) == ["item_id", "channel", "current_price"] and len(prices) == 15
    default = invoke("data", "simulate", "--out", str(tmp_path / "default"), "--days", "20",
                     "--users", "30", "--items", "5", "--seed", "3")
    assert "│ demand family │ exponential │" in default

    result = runner.invoke(app, ["data", "simulate", "--out", str(tmp_path / "bad"),
                                 "--family", "cobb-douglas"])
    assert result.exit_code == 2
    folded = " ".join(result.output.replace("│", " ").split())
    assert "Invalid value for '--family'" in folded
    assert "'cobb-douglas' is not one of 'exponential', 'isoelastic', 'logit'" in folded
    assert not (tmp_path / "bad").exists()


# Bad input: exit code 2, one `error:` line per problem, no traceback.


def fails(*args: str) -> list[str]:
    """Run a command that must reject its input; its `error:` lines."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def one_error(*args: str) -> str:
    errors = fails(*args)
    assert len(errors) == 1, errors
    return errors[0]


@pytest.fixture
def sample_data(data_dir):
    """The data directory holding SAMPLE_EVENTS (2011-01-01 to 2011-01-20) and a catalog."""
    EventLog(data_dir / "events").append(pd.DataFrame(SAMPLE_EVENTS))
    upsert_catalog(data_dir / "catalog.parquet", SAMPLE_CATALOG)
    return data_dir


def test_evaluate_accepts_the_data_directory_for_its_event_log(sample_data):
    # The split check reads the log's date range: the data directory led to its events/.
    for command in ("recs", "demand"):
        error = one_error("evaluate", command, "--events", str(sample_data),
                          "--split-date", "2011-02-01")
        assert error == ("error: --split-date 2011-02-01 is after the event log's last event: "
                         "its events run from 2011-01-01 to 2011-01-20 "
                         f"({sample_data / 'events'})")


def test_evaluate_demand_runs_on_the_data_directory(data_dir):
    days = pd.date_range("2011-01-01", periods=28, freq="D")
    EventLog(data_dir / "events").append(pd.DataFrame([
        event(f"{item}-{day:%d}", f"{day:%Y-%m-%d} 10:00", item_id=item, quantity=1 + n % 3)
        for n, day in enumerate(days) for item in ("i1", "i2")]))
    result = runner.invoke(app, ["evaluate", "demand", "--events", str(data_dir),
                                 "--split-date", "2011-01-21", "--period", "D", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert [row["name"] for row in report["rows"]] == ["model", "last_week", "mean_4w"]


def test_evaluate_says_a_folder_holds_no_event_log(tmp_path, data_dir):
    (tmp_path / "elsewhere" / "events").mkdir(parents=True)
    for command in ("recs", "demand"):
        error = one_error("evaluate", command, "--events", str(tmp_path / "elsewhere"),
                          "--split-date", "2011-01-10")
        assert error == (f"error: {tmp_path / 'elsewhere'} holds no event log: expected "
                         "date=YYYY-MM-DD/part-*.parquet partitions in it or in its events/ "
                         "folder")
    error = one_error("evaluate", "demand", "--events", str(tmp_path / "missing"),
                      "--split-date", "2011-01-10")
    assert error == f"error: event log folder not found: {tmp_path / 'missing'}"


def test_evaluate_recs_needs_a_catalog(sample_data, tmp_path):
    (sample_data / "catalog.parquet").unlink()
    error = one_error("evaluate", "recs", "--split-date", "2011-01-10")
    assert error == (f"error: no catalog beside the event log: expected "
                     f"{sample_data / 'catalog.parquet'}; pass --catalog FILE")
    error = one_error("evaluate", "recs", "--split-date", "2011-01-10",
                      "--catalog", str(tmp_path / "nope.csv"))
    assert error == f"error: --catalog {tmp_path / 'nope.csv'}: file not found"


def test_evaluate_checks_the_split_against_the_log(sample_data):
    error = one_error("evaluate", "demand", "--split-date", "2011-01-01")
    assert error == ("error: --split-date 2011-01-01 leaves no events before it: its events "
                     f"run from 2011-01-01 to 2011-01-20 ({sample_data / 'events'})")
    error = one_error("evaluate", "recs", "--split-date", "2011-01-10", "--until", "2011-01-05")
    assert error == "error: --until 2011-01-05 00:00 is not after --split-date 2011-01-10 00:00"
    # Both problems at once: one line each.
    assert len(fails("evaluate", "demand", "--split-date", "2012-01-01",
                     "--until", "2011-01-05")) == 2


def test_evaluate_demand_explains_a_split_without_whole_periods(sample_data):
    error = one_error("evaluate", "demand", "--split-date", "2011-01-02")
    assert error.startswith("error: --split-date 2011-01-02 with --period W: the split leaves "
                            "no training or no test periods (its events run from 2011-01-01")


def test_period_is_a_closed_choice(sample_data):
    result = runner.invoke(app, ["evaluate", "demand", "--split-date", "2011-01-10",
                                 "--period", "M"])
    assert result.exit_code == 2
    assert "'M' is not one of 'W', 'D'" in result.output


def test_features_build_and_train_recs_need_events(data_dir):
    (data_dir / "events").mkdir(parents=True)
    for command in (("features", "build"), ("train", "recs")):
        error = one_error(*command)
        assert error.startswith(f"error: {data_dir / 'events'} holds no event log: expected "
                                "date=YYYY-MM-DD/part-*.parquet partitions")
        assert error.endswith("import events first (`tailor data import-online-retail FILE` "
                              "or `tailor data import-events FILE`)")


def test_features_commands_say_which_command_to_run_first(sample_data):
    build = "run `tailor features build` first"
    assert one_error("features", "apply").endswith(build)
    assert one_error("train", "recs").endswith(build)
    invoke("features", "build")
    apply = "run `tailor features apply` first"
    assert one_error("features", "materialize").endswith(apply)
    assert one_error("features", "online", "u1", "i1").endswith(apply)
    assert one_error("train", "recs").endswith(apply)
    invoke("features", "apply")
    assert one_error("features", "online", "u1", "i1") == (
        "error: the online store holds no feature values yet: run `tailor features "
        "materialize` first")
    invoke("features", "materialize", "--end", "2011-01-21")
    assert "user_item_times_bought" in invoke("features", "online", "u1", "i1",
                                              "--as-of", "2011-01-21")


def test_pricing_names_missing_market_files_one_line_each(sample_data, tmp_path):
    errors = fails("pricing", "suggest", "--catalog", str(tmp_path / "catalog.csv"))
    assert errors == [
        f"error: --catalog {tmp_path / 'catalog.csv'}: file not found",
        "error: no channels file (channel, fee_percent, fee_fixed) beside the event log: "
        f"expected {sample_data / 'channels.csv'}; pass --channels FILE",
    ]
    error = one_error("train", "pricing", "--channels", str(tmp_path / "channels.csv"))
    assert error == f"error: --channels {tmp_path / 'channels.csv'}: file not found"
    error = one_error("pricing", "suggest", "--events", str(tmp_path))
    assert "holds no event log" in error


def test_evaluate_pricing_needs_a_simulated_market(sample_data):
    error = one_error("evaluate", "pricing", "--sim", str(sample_data))
    assert error == (f"error: {sample_data} is not a market written by `tailor data simulate`: "
                     "missing catalog.csv, channels.csv, ground_truth.parquet")


def test_serve_rejects_an_unknown_clock():
    error = one_error("serve", "--clock", "yesterday")
    assert error == ("error: --clock must be now, model or an ISO time such as "
                     "2011-12-09T12:00, got 'yesterday'")
