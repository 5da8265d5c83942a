"""Offers: one row per item x channel to price, with what the optimizer and the demand model
need (see `build_offers`)."""


import pandas as pd

from features.errors import InputError
from features.timestamps import to_utc
from models.pricing.demand import (
    PERIOD_LENGTHS,
    DemandModel,
    Period,
    build_panel,
    period_start,
    with_price,
)
from models.pricing.optimizer import OFFER_COLUMNS

CHANNEL_COLUMNS = ("channel", "fee_percent", "fee_fixed")
CHANNEL_PRICE_COLUMNS = ("item_id", "channel", "current_price")
SERIES_KEYS = ["item_id", "channel"]


def default_as_of(events: pd.DataFrame) -> pd.Timestamp:
    """The midnight (UTC) after the last event: the end of a complete history."""
    return pd.to_datetime(events["ts"], utc=True).max().floor("D") + pd.Timedelta(days=1)


def decision_period(as_of, period: Period) -> pd.Timestamp:
    """Start of the period the suggestions are for: the period holding `as_of`."""
    return period_start(pd.Series([to_utc(as_of)]), period).iloc[0]


def _named(values, limit: int = 5) -> str:
    values = sorted(map(str, values))
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return ", ".join(values[:limit]) + more


def build_offers(
    events: pd.DataFrame, catalog: pd.DataFrame, channels: pd.DataFrame, as_of,
    period: Period = "W", channel_prices: pd.DataFrame | None = None,
    model: DemandModel | None = None,
) -> pd.DataFrame:
    """One offer per item x channel sold before `as_of`, with `OFFER_COLUMNS`, the item's
    `category` and the demand model's features of the decision period, priced at the current
    price (`price` and the price features); sorted by item and channel.

    The current price is the catalog's: the item x channel's `current_price` in
    `channel_prices` (`CHANNEL_PRICE_COLUMNS`) when it lists the pair, else the catalog's
    `current_price` of the item. Sales only tell which prices were observed (the trust band):
    a price raised after the last sale is current, not the price that sold. With `model`, the
    recent-demand features are the model's (`DemandModel.normalized`). The catalog's stock
    columns and the period's length in days (`period_days`) feed stock-aware pricing."""
    as_of = to_utc(as_of)
    events = events.assign(ts=pd.to_datetime(events["ts"], utc=True))
    history = events[events["ts"] < as_of]
    purchases = history[history["event_type"] == "purchase"]
    if purchases.empty:
        raise InputError(f"no purchases before {as_of.isoformat()}: nothing to price")
    offers = (purchases.groupby(SERIES_KEYS)["unit_price"].agg(["min", "max"])
              .rename(columns={"min": "observed_min_price", "max": "observed_max_price"})
              .reset_index())

    unknown_items = set(offers["item_id"]) - set(catalog["item_id"])
    if unknown_items:
        raise InputError(f"events sell item(s) missing from the catalog: {_named(unknown_items)}")
    unknown_channels = set(offers["channel"]) - set(channels["channel"])
    if unknown_channels:
        raise InputError("events sell on channel(s) missing from the channels file: "
                         f"{_named(unknown_channels)}")
    items = catalog.drop_duplicates("item_id").reindex(columns=[
        "item_id", "category", "unit_cost", "current_price", "min_price", "max_price",
        "stock_on_hand", "restock_days"])
    offers = offers.merge(items, on="item_id", how="left").merge(
        channels[list(CHANNEL_COLUMNS)], on="channel", how="left")
    if channel_prices is not None:
        listed = channel_prices[list(CHANNEL_PRICE_COLUMNS)].rename(
            columns={"current_price": "channel_price"})
        offers = offers.merge(listed, on=SERIES_KEYS, how="left", validate="one_to_one")
        offers["current_price"] = offers.pop("channel_price").fillna(offers["current_price"])

    start = decision_period(as_of, period)
    panel = build_panel(history, period, end=start + PERIOD_LENGTHS[period], catalog=catalog)
    if model is not None:
        panel = model.normalized(panel)
    # The decision period's own units and price are partial (or none): not features.
    rows = panel[panel["period_start"] == start].drop(
        columns=["category", "units", "price", "price_source"])
    offers = offers.merge(rows, on=SERIES_KEYS, how="left", validate="one_to_one")
    offers = with_price(offers, offers["current_price"].to_numpy(dtype=float))
    offers["period_days"] = PERIOD_LENGTHS[period] / pd.Timedelta(days=1)
    columns = [*OFFER_COLUMNS, "category"]
    offers = offers[columns + [c for c in offers.columns if c not in columns]]
    return offers.sort_values(SERIES_KEYS, ignore_index=True)
