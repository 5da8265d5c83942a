from datetime import UTC, datetime

import pandas as pd
import pyarrow.parquet as pq
import pytest

from features.schemas import InvalidRecordsError
from features.served_log import ServedLog, served_dir, served_handler, served_record
from features.settings import Settings


def response(request_id: str, ts: str, items: str = "a b", user_id: str = "u1",
             model_version: str | None = "3", fallback: bool = False) -> dict:
    """A served record; `items` are item ids best first, scored 1/position, source `als`."""
    stamp = datetime.fromisoformat(ts)
    stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    return served_record(request_id, stamp, user_id, model_version, fallback,
                         [(item, 1 / position, "als")
                          for position, item in enumerate(items.split(), start=1)])


def test_append_stores_one_row_per_item_in_the_response_date_partition(tmp_path):
    log = ServedLog(tmp_path)
    written = log.append([response("r1", "2024-03-01T10:00", "a b"),
                          response("r2", "2024-03-02T09:00", "c", model_version=None,
                                   fallback=True)])
    assert written == 2
    assert sorted(p.name for p in tmp_path.glob("date=*")) == ["date=2024-03-01",
                                                               "date=2024-03-02"]
    rows = log.read()
    assert rows[["request_id", "position", "item_id", "source", "score", "model_version",
                 "fallback"]].to_dict("records") == [
        {"request_id": "r1", "position": 1, "item_id": "a", "source": "als", "score": 1.0,
         "model_version": "3", "fallback": False},
        {"request_id": "r1", "position": 2, "item_id": "b", "source": "als", "score": 0.5,
         "model_version": "3", "fallback": False},
        {"request_id": "r2", "position": 1, "item_id": "c", "source": "als", "score": 1.0,
         "model_version": None, "fallback": True}]
    assert str(rows["ts"].dtype) == "datetime64[us, UTC]"


def test_a_response_is_partitioned_by_its_utc_date(tmp_path):
    log = ServedLog(tmp_path)
    log.append([response("r1", "2024-03-01T23:30:00-02:00")])
    assert [p.name for p in tmp_path.glob("date=*")] == ["date=2024-03-02"]
    assert log.read()["ts"].iloc[0] == pd.Timestamp("2024-03-02 01:30", tz="UTC")


def test_appending_the_same_responses_again_stores_them_once(tmp_path):
    log = ServedLog(tmp_path)
    first = [response("r1", "2024-03-01T10:00"), response("r2", "2024-03-02T10:00")]
    assert log.append(first) == 2
    assert log.append([*first, response("r3", "2024-03-02T11:00")]) == 1
    assert log.read()["request_id"].tolist() == ["r1", "r1", "r2", "r2", "r3", "r3"]


def test_a_request_id_repeated_within_a_batch_keeps_its_first_record(tmp_path):
    log = ServedLog(tmp_path)
    assert log.append([response("r1", "2024-03-01T10:00", "a"),
                       response("r1", "2024-03-01T10:00", "z")]) == 1
    assert log.read()["item_id"].tolist() == ["a"]


def test_a_writer_skips_responses_another_writer_stored_since(tmp_path):
    first, second = ServedLog(tmp_path), ServedLog(tmp_path)
    first.append([response("r1", "2024-03-01T10:00")])
    second.append([response("r2", "2024-03-01T11:00")])
    assert first.append([response("r1", "2024-03-01T10:00"),
                         response("r2", "2024-03-01T11:00")]) == 0
    assert sorted(set(ServedLog(tmp_path).read()["request_id"])) == ["r1", "r2"]


def test_a_response_with_no_items_writes_nothing(tmp_path):
    log = ServedLog(tmp_path)
    assert log.append([response("r1", "2024-03-01T10:00", items="")]) == 0
    assert log.read().empty and log.days() == []


def test_read_returns_the_responses_of_a_half_open_time_range(tmp_path):
    log = ServedLog(tmp_path)
    log.append([response("r1", "2024-03-01T10:00"), response("r2", "2024-03-02T00:00"),
                response("r3", "2024-03-03T00:00")])
    chosen = log.read(start=datetime(2024, 3, 2, tzinfo=UTC),
                      end=datetime(2024, 3, 3, tzinfo=UTC))
    assert chosen["request_id"].unique().tolist() == ["r2"]
    assert log.days() == [datetime(2024, 3, d).date() for d in (1, 2, 3)]


def test_an_invalid_record_writes_nothing_and_is_named(tmp_path):
    log = ServedLog(tmp_path)
    bad = response("r2", "2024-03-01T10:00")
    bad["items"][1]["score"] = float("nan")
    with pytest.raises(InvalidRecordsError, match=r"record 1, field 'items\.1\.score'"):
        log.append([response("r1", "2024-03-01T10:00"), bad])
    assert log.read().empty


def test_a_write_that_fails_midway_leaves_no_file_and_stores_nothing(tmp_path, monkeypatch):
    log = ServedLog(tmp_path)
    real_write = pq.write_table

    def write_half_then_fail(table, where, **options):
        real_write(table.slice(0, 1), where, **options)
        raise OSError("No space left on device")

    monkeypatch.setattr(pq, "write_table", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        log.append([response("r1", "2024-03-01T10:00", "a b c")])
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [".lock"]
    monkeypatch.setattr(pq, "write_table", real_write)
    assert log.append([response("r1", "2024-03-01T10:00", "a b c")]) == 1
    assert log.read()["item_id"].tolist() == ["a", "b", "c"]


def test_the_consumer_handler_stores_a_redelivered_entry_once(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    store = served_handler(settings)
    entry = [response("r1", "2024-03-01T10:00"), response("r2", "2024-03-01T10:01")]
    store(entry)
    store(entry)
    rows = ServedLog(served_dir(settings)).read()
    assert served_dir(settings) == tmp_path / "data" / "served"
    assert rows["request_id"].tolist() == ["r1", "r1", "r2", "r2"]
