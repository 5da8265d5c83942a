"""Loading data into tailor: canonical event and catalog files, and the Online Retail export."""

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from features.errors import InputError
from features.event_log import AppendResult, EventLog, write_parquet_atomic
from features.online_retail import ConversionReport, convert_online_retail, read_online_retail
from features.progress import stages
from features.schemas import CATALOG_ARROW_SCHEMA, validate_catalog, validate_events


def read_table_file(path: Path) -> pd.DataFrame:
    """Read a CSV (all fields as text, empty = missing) or Parquet file."""
    suffixes = "".join(path.suffixes[-2:]).lower()
    if suffixes.endswith(".parquet"):
        return pd.read_parquet(path)
    if suffixes.endswith((".csv", ".csv.gz")):
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    raise InputError(f"{path}: expected a .csv, .csv.gz or .parquet file")


def read_catalog(path: Path) -> pd.DataFrame:
    """The stored catalog, or an empty one with the canonical columns."""
    if not path.exists():
        return pa.Table.from_pylist([], schema=CATALOG_ARROW_SCHEMA).to_pandas()
    return pd.read_parquet(path)


def upsert_catalog(path: Path, items: pd.DataFrame) -> int:
    """Validate `items` and merge them into the catalog at `path` (new rows win by item_id)."""
    items = validate_catalog(items)
    kept = read_catalog(path)
    kept = kept[~kept["item_id"].isin(items["item_id"])]
    merged = pd.concat([kept, items], ignore_index=True).sort_values("item_id", kind="stable")
    table = pa.Table.from_pandas(merged, schema=CATALOG_ARROW_SCHEMA, preserve_index=False)
    write_parquet_atomic(table, path)
    return len(items)


def import_events_file(path: Path, events_dir: Path) -> AppendResult:
    """Validate a canonical events file and append it to the event log; all or nothing."""
    return EventLog(events_dir).append(validate_events(read_table_file(path)))


@dataclass(frozen=True)
class OnlineRetailImport:
    """What an Online Retail import read, wrote and rejected."""

    report: ConversionReport
    appended: AppendResult
    catalog_items: int


def import_online_retail(path: Path, data_dir: Path) -> OnlineRetailImport:
    """Import the Online Retail export into `data_dir` (event log and catalog)."""
    with stages(["reading export", "converting rows", "validating events", "writing"]) as done:
        raw = read_online_retail(path)
        done()
        events, catalog, report = convert_online_retail(raw)
        done()
        events = validate_events(events)
        catalog = validate_catalog(catalog)
        done()
        appended = EventLog(data_dir / "events").append(events)
        catalog_items = upsert_catalog(data_dir / "catalog.parquet", catalog)
        done()
    return OnlineRetailImport(report, appended, catalog_items)
