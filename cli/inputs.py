"""The inputs commands name, resolved and checked before any work starts.

Every command that reads the event log, the catalog or the channel fees takes them the same
way: `--events` (the event log, or a data directory holding it in `events/`), `--catalog` and
`--channels`, each defaulting to the data directory's (`TAILOR_DATA_DIR`) or to the files
beside the given log; pricing commands also take `--channel-prices`, the optional channel
price list (default: channel_prices.csv beside the log, when there is one). Every problem
found becomes one `error:` line (exit code 2).
"""

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from cli.output import fail
from features.errors import InputError
from features.event_log import EventLog
from features.ingest import read_catalog, read_table_file
from features.schemas import validate_catalog
from features.settings import get_settings
from features.simulator import CHANNEL_PRICES_FILE
from features.timestamps import to_utc
from models.pricing.demand import Period

EVENT_LOG_LAYOUT = "date=YYYY-MM-DD/part-*.parquet partitions"
CATALOG_NAMES = ("catalog.parquet", "catalog.csv")
CHANNELS_NAME = "channels.csv"
INPUTS = "Inputs"

EventsOption = Annotated[Path | None, typer.Option(
    "--events", rich_help_panel=INPUTS,
    help="Event log folder (date=YYYY-MM-DD partitions) or a data directory holding it in "
         "events/; default: the data directory's")]
CatalogOption = Annotated[Path | None, typer.Option(
    "--catalog", rich_help_panel=INPUTS,
    help="Catalog (CSV or Parquet); default: catalog.parquet (or catalog.csv) beside the "
         "event log")]
ChannelsOption = Annotated[Path | None, typer.Option(
    "--channels", rich_help_panel=INPUTS,
    help="Channel fees CSV (channel, fee_percent, fee_fixed); default: channels.csv beside "
         "the event log")]
ChannelPricesOption = Annotated[Path | None, typer.Option(
    "--channel-prices", rich_help_panel=INPUTS,
    help="Channel price list CSV (item_id, channel, current_price) for items priced apart per "
         "channel; default: channel_prices.csv beside the event log if there is one, else the "
         "catalog's current_price on every channel")]
PeriodOption = Annotated[Period, typer.Option(
    help="Demand period: W (weeks from Monday, UTC) or D (days)")]
SplitOption = Annotated[datetime, typer.Option(
    "--split-date", help="First day scored (UTC); everything before it is training data")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object")]
ExistingFile = Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)]


@dataclass(frozen=True)
class EventLogInput:
    """An event log folder and the UTC days its partitions cover."""

    path: Path
    first_day: date
    last_day: date

    @property
    def span(self) -> str:
        return f"its events run from {self.first_day} to {self.last_day}"


@dataclass(frozen=True)
class MarketInputs:
    """The files of a market: event log, catalog, channel fees."""

    events: EventLogInput
    catalog: Path
    channels: Path
    channel_prices: Path | None = None


def _event_log(given: Path | None, problems: list[str]) -> EventLogInput | None:
    folder = given if given is not None else get_settings().events_dir
    if not folder.exists():
        problems.append(f"event log folder not found: {folder}")
        return None
    if not folder.is_dir():
        problems.append(f"{folder} is a file; --events names the event log folder "
                        f"({EVENT_LOG_LAYOUT}) or the data directory holding it in events/")
        return None
    for candidate in (folder, folder / "events"):
        days = EventLog(candidate).days()
        if days:
            return EventLogInput(candidate, days[0], days[-1])
    hint = ("" if given is not None else
            "; import events first (`tailor data import-online-retail FILE` or "
            "`tailor data import-events FILE`)")
    problems.append(f"{folder} holds no event log: expected {EVENT_LOG_LAYOUT} in it or in "
                    f"its events/ folder{hint}")
    return None


def _beside_log(given: Path | None, option: str, names: tuple[str, ...],
                log: EventLogInput | None, what: str, problems: list[str]) -> Path | None:
    if given is not None:
        if not given.is_file():
            problems.append(f"{option} {given}: file not found")
            return None
        return given
    if log is None:
        return None
    folder = log.path.parent
    for name in names:
        if (folder / name).is_file():
            return folder / name
    problems.append(f"no {what} beside the event log: expected {folder / names[0]}; "
                    f"pass {option} FILE")
    return None


def event_log(given: Path | None) -> EventLogInput:
    """The event log named by `--events` (default: the data directory's), or exit 2."""
    problems: list[str] = []
    log = _event_log(given, problems)
    if log is None:
        fail(*problems)
    return log


def events_and_catalog(events: Path | None, catalog: Path | None) -> tuple[EventLogInput, Path]:
    """The event log and the catalog file, or exit 2 naming every missing one."""
    problems: list[str] = []
    log = _event_log(events, problems)
    catalog_file = _beside_log(catalog, "--catalog", CATALOG_NAMES, log, "catalog", problems)
    if log is None or catalog_file is None:
        fail(*problems)
    return log, catalog_file


def market(events: Path | None, catalog: Path | None, channels: Path | None,
           guardrails: Path | None = None, channel_prices: Path | None = None) -> MarketInputs:
    """The event log, catalog and channel fee files, the channel price list (when named or
    beside the log) and the guardrails file (if named), or exit 2 naming every missing one."""
    problems: list[str] = []
    log = _event_log(events, problems)
    catalog_file = _beside_log(catalog, "--catalog", CATALOG_NAMES, log, "catalog", problems)
    channels_file = _beside_log(channels, "--channels", (CHANNELS_NAME,), log,
                                "channels file (channel, fee_percent, fee_fixed)", problems)
    if guardrails is not None and not guardrails.is_file():
        problems.append(f"--guardrails {guardrails}: file not found")
    if channel_prices is not None and not channel_prices.is_file():
        problems.append(f"--channel-prices {channel_prices}: file not found")
    if log is None or catalog_file is None or channels_file is None or problems:
        fail(*problems)
    beside = log.path.parent / CHANNEL_PRICES_FILE
    if channel_prices is None and beside.is_file():
        channel_prices = beside
    return MarketInputs(log, catalog_file, channels_file, channel_prices)


def read_catalog_file(path: Path) -> pd.DataFrame:
    """The catalog at `path` (the stored Parquet catalog, or any CSV/Parquet of canonical
    items, validated), or exit 2 with its problems."""
    try:
        if path.suffix == ".parquet":
            return read_catalog(path)
        return validate_catalog(read_table_file(path))
    except InputError as error:
        fail(f"{path}: {error}")


def time_split(log: EventLogInput, split_date: datetime,
               until: datetime | None) -> tuple[pd.Timestamp, pd.Timestamp | None]:
    """`--split-date` and `--until` as UTC times, checked against the log's days: the split
    must leave events before and after it, `--until` must come after the split."""
    split = to_utc(split_date)
    end = to_utc(until) if until is not None else None
    problems = []
    if split <= to_utc(pd.Timestamp(log.first_day)):
        problems.append(f"--split-date {split:%Y-%m-%d} leaves no events before it: "
                        f"{log.span} ({log.path})")
    elif split >= to_utc(pd.Timestamp(log.last_day)) + pd.Timedelta(days=1):
        problems.append(f"--split-date {split:%Y-%m-%d} is after the event log's last event: "
                        f"{log.span} ({log.path})")
    if end is not None and end <= split:
        problems.append(f"--until {end:%Y-%m-%d %H:%M} is not after --split-date "
                        f"{split:%Y-%m-%d %H:%M}")
    if problems:
        fail(*problems)
    return split, end


def utc_datetime(value: datetime | None) -> datetime | None:
    """A command-line time as an aware UTC `datetime` (naive means UTC)."""
    return None if value is None else to_utc(value).to_pydatetime()


SIMULATED_FILES = ("catalog.csv", "channels.csv", "ground_truth.parquet")


def simulated_market(folder: Path) -> None:
    """Exit 2 unless `folder` holds a market written by `tailor data simulate`."""
    missing = [name for name in SIMULATED_FILES if not (folder / name).is_file()]
    if not EventLog(folder / "events").days():
        missing.insert(0, f"events/ ({EVENT_LOG_LAYOUT})")
    if missing:
        fail(f"{folder} is not a market written by `tailor data simulate`: missing "
             f"{', '.join(missing)}")
