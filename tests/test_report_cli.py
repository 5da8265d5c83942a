"""`tailor report recs` on a data directory holding a served log and an event log."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app
from cli.output import out
from features.event_log import EventLog
from features.served_log import ServedLog, served_record
from features.settings import get_settings
from tests.test_attribution import ATTRIBUTED, NOT_ATTRIBUTED, RESPONSES, events_frame

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TAILOR_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


@pytest.fixture
def recorded(data_dir):
    """The data directory holding the attribution tests' responses and events."""
    ServedLog(data_dir / "served").append([
        served_record(request_id, pd.Timestamp(ts, tz="UTC").to_pydatetime(), "u1", version,
                      fallback,
                      [(item, 1.0 / position, source)
                       for position, (item, source) in enumerate(items, start=1)])
        for request_id, (ts, version, fallback, items) in RESPONSES.items()])
    EventLog(data_dir / "events").append(events_frame(ATTRIBUTED + NOT_ATTRIBUTED))
    return data_dir


def run(*args: str):
    return runner.invoke(app, ["report", "recs", *args])


def test_report_recs_json_attributes_events_per_version_and_source(recorded):
    result = run("--since", "2024-03-01", "--until", "2024-03-03", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["since"], report["until"], report["window_days"], report["currency"]) == (
        "2024-03-01", "2024-03-03", 7, "GBP")
    rows = {(r["model_version"], r["fallback"], r["source"]): r for r in report["rows"]}
    assert set(rows) == {("7", False, "covisit"), ("7", False, "als"),
                         ("7", False, "popular"), ("7", False, "total"),
                         ("8", False, "repurchase"), ("8", False, "als"),
                         ("8", False, "total"), ("7", True, "popular"), ("7", True, "total")}
    assert {k: rows["7", False, "als"][k] for k in ("impressions", "clicks", "purchases",
                                                    "units", "revenue")} == {
        "impressions": 1, "clicks": 1, "purchases": 1, "units": 3, "revenue": 9.0}
    assert rows["7", True, "total"]["click_rate"] == 0.5


def test_report_recs_tables_show_each_group_and_the_unattributed_events(recorded,
                                                                         monkeypatch):
    monkeypatch.setattr(out, "width", 160)
    result = run("--since", "2024-03-01", "--window-days", "8")
    assert result.exit_code == 0, result.output
    folded = " ".join(result.stdout.split())
    model_7 = folded.index(" model 7 ")
    assert folded.index("│ total │ 1 │ 3 │ 1 │ 33.33% │ 2 │ 66.67% │ 4 │ 12.00 │") > model_7
    fallback = folded.index(" no model, fallback responses ")
    assert folded.index("│ popular │ 1 │ 1 │ 1 │ 100.00% │ 0 │ 0.00% │ 0 │ 0.00 │") > fallback
    assert "revenue (GBP)" in folded and " model 7, fallback responses " in folded
    assert "1 views and purchases in the period carry none" in folded


def errors(*args: str) -> list[str]:
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output.splitlines()


@pytest.mark.parametrize("option", ["--since", "--until"])
def test_report_recs_names_the_option_of_a_bad_date(recorded, option):
    args = {"--since": "2024-03-01", "--until": "2024-03-05", option: "2024-13-01"}
    folded = " ".join(" ".join(errors(*[p for pair in args.items() for p in pair])).split())
    assert f"Invalid value for '{option}'" in folded and "'2024-13-01' does not match" in folded


def test_report_recs_refuses_an_until_before_since(recorded):
    assert "error: --until 2024-03-01 is not after --since 2024-03-02" in errors(
        "--since", "2024-03-02", "--until", "2024-03-01")


def test_report_recs_says_when_nothing_was_served_in_the_period(recorded):
    assert ("error: --since 2024-04-01: no responses served then; the served log runs from "
            "2024-02-28 to 2024-03-03") in errors("--since", "2024-04-01")


def test_report_recs_says_when_nothing_is_recorded(data_dir):
    lines = errors("--since", "2024-03-01")
    assert lines[0].startswith(f"error: no recommendation responses are recorded in "
                               f"{data_dir / 'served'}")
