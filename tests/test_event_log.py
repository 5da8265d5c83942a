import pandas as pd
import pytest

from features.event_log import COMPACT_AT_FILES, EventLog
from features.ingest import import_events_file
from features.schemas import InvalidRecordsError, validate_events
from tests.conftest import event


def frame(*rows) -> pd.DataFrame:
    return validate_events(pd.DataFrame(list(rows)))


def test_append_writes_one_file_per_date_partition(tmp_path):
    log = EventLog(tmp_path)
    result = log.append(frame(event("a", "2011-01-01 10:00"), event("b", "2011-01-01 23:59"),
                              event("c", "2011-01-02 00:00")))
    assert (result.written, result.duplicates, result.files) == (3, 0, 2)
    partitions = sorted(p.name for p in tmp_path.glob("date=*"))
    assert partitions == ["date=2011-01-01", "date=2011-01-02"]


def test_append_of_the_same_events_twice_does_not_duplicate(tmp_path):
    log = EventLog(tmp_path)
    events = frame(event("a", "2011-01-01"), event("b", "2011-01-02"))
    log.append(events)
    again = log.append(pd.concat([events, frame(event("c", "2011-01-03"))], ignore_index=True))
    assert (again.written, again.duplicates) == (1, 2)
    assert log.read()["event_id"].tolist() == ["a", "b", "c"]


def test_append_keeps_the_first_of_repeated_ids_within_a_batch(tmp_path):
    log = EventLog(tmp_path)
    result = log.append(frame(event("a", "2011-01-01", quantity=1),
                              event("a", "2011-01-01", quantity=9)))
    assert (result.written, result.duplicates) == (1, 1)
    assert log.read()["quantity"].tolist() == [1]


def test_read_returns_events_in_a_half_open_time_range(tmp_path):
    log = EventLog(tmp_path)
    log.append(frame(event("a", "2011-01-01"), event("b", "2011-01-02"),
                     event("c", "2011-01-03")))
    chosen = log.read(start=pd.Timestamp("2011-01-02", tz="UTC"),
                      end=pd.Timestamp("2011-01-03", tz="UTC"))
    assert chosen["event_id"].tolist() == ["b"]
    assert str(chosen["ts"].dtype) == "datetime64[us, UTC]"


def test_import_events_file_writes_nothing_when_one_record_is_invalid(tmp_path):
    rows = [event("a", "2011-01-01"), event("b", "2011-01-02", quantity=-1)]
    path = tmp_path / "events.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    with pytest.raises(InvalidRecordsError, match="row 1, field 'quantity'"):
        import_events_file(path, tmp_path / "log")
    assert EventLog(tmp_path / "log").read().empty


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_import_events_file_loads_csv_and_parquet(tmp_path, suffix):
    rows = pd.DataFrame([event("a", "2011-01-01", user_id=None), event("b", "2011-01-02")])
    path = tmp_path / f"events{suffix}"
    if suffix == ".csv":
        rows.to_csv(path, index=False)
    else:
        rows.to_parquet(path)
    result = import_events_file(path, tmp_path / "log")
    stored = EventLog(tmp_path / "log").read()
    assert result.written == 2
    assert stored["user_id"].tolist() == [None, "u1"]
    assert stored["ts"].tolist() == rows["ts"].tolist()


def test_a_log_file_written_before_the_newer_columns_reads_them_as_missing(tmp_path):
    old = frame(event("a", "2011-01-01")).drop(columns=["request_id", "stock_on_hand"])
    path = tmp_path / "date=2011-01-01" / "part-old.parquet"
    path.parent.mkdir()
    old.to_parquet(path, index=False)
    stored = EventLog(tmp_path).read()
    assert stored[["event_id", "request_id"]].to_dict("records") == [
        {"event_id": "a", "request_id": None}]
    assert stored["stock_on_hand"].isna().all()


def test_a_writer_sees_the_events_another_writer_appended_since(tmp_path):
    first, second = EventLog(tmp_path), EventLog(tmp_path)
    first.append(frame(event("a", "2011-01-01")))
    second.append(frame(event("b", "2011-01-01")))  # second has read a's file now
    again = first.append(frame(event("a", "2011-01-01"), event("b", "2011-01-01")))
    assert (again.written, again.duplicates) == (0, 2)
    assert sorted(EventLog(tmp_path).read()["event_id"]) == ["a", "b"]


def test_compaction_merges_a_partitions_small_files_and_keeps_every_event_once(tmp_path):
    log = EventLog(tmp_path)
    for n in range(COMPACT_AT_FILES - 1):
        log.append(frame(event(f"e{n:03d}", f"2011-01-01 10:{n % 60:02d}")))
    assert log.compact("2011-01-01") == 0  # not yet enough small files
    log.append(frame(event("last", "2011-01-01 23:00"), event("next-day", "2011-01-02")))
    assert log.compact("2011-01-01") == COMPACT_AT_FILES
    assert len(list((tmp_path / "date=2011-01-01").glob("*.parquet"))) == 1
    stored = EventLog(tmp_path).read()
    assert len(stored) == COMPACT_AT_FILES + 1 and stored["event_id"].is_unique
    again = log.append(frame(event("e000", "2011-01-01 10:00"), event("new", "2011-01-01")))
    assert (again.written, again.duplicates) == (1, 1)
    assert EventLog(tmp_path).append(frame(event("e005", "2011-01-01 10:05"))).written == 0


def test_a_compaction_stopped_before_removing_the_merged_files_reads_each_event_once(
        tmp_path):
    log = EventLog(tmp_path)
    for n in range(COMPACT_AT_FILES):
        log.append(frame(event(f"e{n:03d}", "2011-01-01 10:00")))
    kept = {path: path.read_bytes() for path in (tmp_path / "date=2011-01-01").glob("*")}
    log.compact("2011-01-01")
    for path, content in kept.items():  # as if the small files had not been removed
        path.write_bytes(content)
    stored = EventLog(tmp_path).read()
    assert len(stored) == COMPACT_AT_FILES and stored["event_id"].is_unique


def test_read_of_some_columns_keeps_the_order_and_each_event_once(tmp_path):
    log = EventLog(tmp_path)
    for n in range(COMPACT_AT_FILES):
        log.append(frame(event(f"e{n:03d}", f"2011-01-01 10:{59 - n:02d}",
                               user_id=f"u{n}")))
    kept = {path: path.read_bytes() for path in (tmp_path / "date=2011-01-01").glob("*")}
    log.compact("2011-01-01")
    for path, content in kept.items():  # each event stored twice
        path.write_bytes(content)

    chosen = EventLog(tmp_path).read(columns=["user_id", "ts"])

    assert list(chosen.columns) == ["user_id", "ts"]
    whole = EventLog(tmp_path).read()
    pd.testing.assert_frame_equal(chosen, whole[["user_id", "ts"]])
    assert chosen["user_id"].tolist() == [f"u{n}" for n in reversed(range(COMPACT_AT_FILES))]
    assert list(EventLog(tmp_path / "empty").read(columns=["item_id"]).columns) == ["item_id"]
