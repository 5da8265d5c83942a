"""Market files: the event log, the catalog, the channel fees and the optional channel price
list, read and checked; errors name the file."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import InputError
from features.event_log import EventLog
from features.ingest import read_table_file
from features.schemas import InvalidRecordsError, validate_catalog
from features.simulator import CHANNEL_PRICES_FILE
from models.pricing.offers import CHANNEL_COLUMNS, CHANNEL_PRICE_COLUMNS


def _read(path: Path, what: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    return read_table_file(path)


def _numbers(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    values = pd.to_numeric(frame[column].replace("", np.nan), errors="coerce")
    bad = frame.index[values.isna() | ~np.isfinite(values)].tolist()
    if bad:
        raise InputError(f"{path}: column '{column}' needs a finite number on every row "
                         f"(row(s) {', '.join(map(str, bad[:5]))})")
    return values.astype(float)


def read_channels(path: Path) -> pd.DataFrame:
    """The channels file (`channel`, `fee_percent`, `fee_fixed`), checked."""
    path = Path(path)
    raw = _read(path, "channels")
    missing = [column for column in CHANNEL_COLUMNS if column not in raw.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    channels = pd.DataFrame({"channel": raw["channel"].astype(str).str.strip()})
    if (channels["channel"] == "").any():
        raise InputError(f"{path}: column 'channel' is empty on some row")
    if channels["channel"].duplicated().any():
        raise InputError(f"{path}: column 'channel' repeats "
                         f"{sorted(set(channels['channel'][channels['channel'].duplicated()]))}")
    channels["fee_percent"] = _numbers(raw, "fee_percent", path)
    channels["fee_fixed"] = _numbers(raw, "fee_fixed", path)
    if ((channels["fee_percent"] < 0) | (channels["fee_percent"] >= 100)).any():
        raise InputError(f"{path}: column 'fee_percent' must be in [0, 100)")
    if (channels["fee_fixed"] < 0).any():
        raise InputError(f"{path}: column 'fee_fixed' must be >= 0")
    return channels


def read_channel_prices(path: Path) -> pd.DataFrame:
    """The channel price list (`item_id`, `channel`, `current_price` > 0), checked: one row
    per item x channel."""
    path = Path(path)
    raw = _read(path, "channel price list")
    missing = [column for column in CHANNEL_PRICE_COLUMNS if column not in raw.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    prices = pd.DataFrame({name: raw[name].astype(str).str.strip()
                           for name in ("item_id", "channel")})
    for name in ("item_id", "channel"):
        if (prices[name] == "").any():
            raise InputError(f"{path}: column '{name}' is empty on some row")
    prices["current_price"] = _numbers(raw, "current_price", path)
    if (prices["current_price"] <= 0).any():
        raise InputError(f"{path}: column 'current_price' must be > 0")
    repeated = prices.duplicated(["item_id", "channel"])
    if repeated.any():
        first = prices[repeated].iloc[0]
        raise InputError(f"{path}: item_id {first['item_id']} on channel {first['channel']} is "
                         "listed more than once")
    return prices


@dataclass(frozen=True)
class Market:
    """A shop's pricing inputs: events, catalog, channel fees and, when the shop prices its
    channels apart, the channel price list (else None: the catalog's price on every channel)."""

    events: pd.DataFrame
    catalog: pd.DataFrame
    channels: pd.DataFrame
    channel_prices: pd.DataFrame | None = None


def load_market_files(
    events_dir: Path, catalog_file: Path, channels_file: Path,
    channel_prices_file: Path | None = None,
) -> Market:
    """The event log, the catalog (validated), the channel fees and the channel price list
    (when given); errors name the file."""
    events_dir = Path(events_dir)
    if not events_dir.is_dir():
        raise FileNotFoundError(f"events directory not found: {events_dir}")
    events = EventLog(events_dir).read()
    if not (events["event_type"] == "purchase").any():
        raise InputError(f"{events_dir}: the event log holds no purchase events")
    try:
        catalog = validate_catalog(_read(Path(catalog_file), "catalog"))
    except InvalidRecordsError as error:
        raise InputError(f"{catalog_file}: {error}") from None
    prices = read_channel_prices(channel_prices_file) if channel_prices_file else None
    return Market(events, catalog, read_channels(Path(channels_file)), prices)


def read_simulation(sim_dir: Path) -> Market:
    """The market of a simulated market directory (`write_simulation`)."""
    sim_dir = Path(sim_dir)
    prices = sim_dir / CHANNEL_PRICES_FILE
    return load_market_files(sim_dir / "events", sim_dir / "catalog.csv",
                             sim_dir / "channels.csv", prices if prices.is_file() else None)
