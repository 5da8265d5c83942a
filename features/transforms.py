"""Pure transforms from the event log to the feature tables behind the Feast feature views.

Every row carries `event_timestamp`, the end of the UTC day it describes: its values are
computed from events strictly before that instant, so a point-in-time join at time t only
sees rows whose events happened before t. Tables are sparse: a row is written when a value
changes (user and user x item: days with a purchase or return; item: days on which a window
count, trend or price statistic moves, including the days events leave a window).
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features.event_log import EventLog, write_parquet_atomic

ITEM_WINDOWS_DAYS = (7, 30, 90)
REBUY_WINDOW_DAYS = 30
ONE_DAY = pd.Timedelta(days=1)
FEATURE_TABLES = ("user_stats", "item_stats", "user_item_stats")
"""The tables behind the views of the `recs_ranker_v1` feature service."""
USER_ITEM_INDEX = "user_item_index"
"""The table behind the serving index of `user_item_stats` (see `user_item_index`)."""


def _sales(events: pd.DataFrame) -> pd.DataFrame:
    """Purchase and return events with their UTC day, signed units and signed amount."""
    sales = events[events["event_type"].isin(["purchase", "return"])].copy()
    sign = np.where(sales["event_type"] == "purchase", 1, -1)
    sales["day"] = sales["ts"].dt.floor("D")
    sales["units"] = sales["quantity"].astype("int64") * sign
    sales["amount"] = sales["quantity"] * sales["unit_price"] * sign
    return sales


def _cumulative(daily: pd.DataFrame, keys: list[str], columns: list[str]) -> pd.DataFrame:
    daily[columns] = daily.groupby(keys, sort=False)[columns].cumsum()
    return daily


def _first_occurrence_per_day(frame: pd.DataFrame, keys: list[str], name: str) -> pd.Series:
    """How many (keys) combinations occur for the first time on each (user, day)."""
    first = frame.drop_duplicates(keys)
    return first.groupby(["user_id", "day"]).size().rename(name)


def user_stats(events: pd.DataFrame, catalog: pd.DataFrame) -> pd.DataFrame:
    """RFM-style cumulative user features and category shares, one row per active day."""
    sales = _sales(events[events["user_id"].notna()]).sort_values(["ts", "event_id"])
    purchases = sales[sales["event_type"] == "purchase"]
    by_day = sales.groupby(["user_id", "day"])
    daily = pd.DataFrame(
        {
            "user_monetary": by_day["amount"].sum(),
            "user_returns": by_day["event_type"].apply(lambda t: int((t == "return").sum())),
        }
    )
    daily = daily.join(_first_occurrence_per_day(purchases, ["user_id", "session_id"],
                                                 "user_frequency"))
    daily = daily.join(_first_occurrence_per_day(purchases, ["user_id", "item_id"],
                                                 "user_distinct_items"))
    bought = purchases.groupby(["user_id", "day"])["ts"]
    daily = daily.join(bought.max().rename("user_last_purchase_ts"))
    daily = daily.join(bought.min().rename("user_first_purchase_ts"))
    counts = ["user_frequency", "user_distinct_items", "user_monetary", "user_returns"]
    daily[counts] = daily[counts].fillna(0)
    daily = daily.reset_index().sort_values(["user_id", "day"], kind="stable")
    daily = _cumulative(daily, ["user_id"], counts)
    daily["user_monetary"] = daily["user_monetary"].round(2)
    for column in ("user_frequency", "user_distinct_items", "user_returns"):
        daily[column] = daily[column].astype("int64")
    by_user = daily.groupby("user_id", sort=False)
    daily["user_last_purchase_ts"] = by_user["user_last_purchase_ts"].ffill()
    daily["user_first_purchase_ts"] = by_user["user_first_purchase_ts"].transform("first")
    daily["user_first_purchase_ts"] = daily["user_first_purchase_ts"].where(
        daily["user_last_purchase_ts"].notna()
    )
    names, shares = _category_shares(purchases, catalog, daily[["user_id", "day"]])
    daily["user_category_names"], daily["user_category_shares"] = names, shares
    daily["event_timestamp"] = daily.pop("day") + ONE_DAY
    return daily.reset_index(drop=True)


def _category_shares(purchases: pd.DataFrame, catalog: pd.DataFrame, rows: pd.DataFrame):
    """Per row (user, day): categories bought so far and each one's share of units."""
    category = purchases["item_id"].map(catalog.set_index("item_id")["category"])
    units = (
        purchases.assign(category=category.fillna("unknown"))
        .pivot_table(index=["user_id", "day"], columns="category", values="units",
                     aggfunc="sum", fill_value=0)
        .reindex(pd.MultiIndex.from_frame(rows), fill_value=0)
    )
    cumulative = units.groupby(level="user_id", sort=False).cumsum().to_numpy(dtype=float)
    totals = cumulative.sum(axis=1, keepdims=True)
    share = np.divide(cumulative, totals, out=np.zeros_like(cumulative), where=totals > 0)
    labels = np.asarray(units.columns, dtype=object)
    names = [labels[row > 0].tolist() for row in share]
    values = [np.round(row[row > 0], 6).tolist() for row in share]
    return names, values


def user_item_stats(events: pd.DataFrame) -> pd.DataFrame:
    """Cumulative purchases and returns of each user x item pair, one row per active day."""
    sales = _sales(events[events["user_id"].notna()])
    sales["bought"] = (sales["event_type"] == "purchase").astype("int64")
    sales["units_bought"] = sales["units"].clip(lower=0)
    sales["units_returned"] = (-sales["units"]).clip(lower=0)
    sales["purchase_ts"] = sales["ts"].where(sales["event_type"] == "purchase")
    keys = ["user_id", "item_id"]
    daily = (
        sales.groupby([*keys, "day"])
        .agg(user_item_times_bought=("bought", "sum"),
             user_item_units_bought=("units_bought", "sum"),
             user_item_units_returned=("units_returned", "sum"),
             user_item_last_purchase_ts=("purchase_ts", "max"))
        .reset_index()
    )
    counts = ["user_item_times_bought", "user_item_units_bought", "user_item_units_returned"]
    daily = _cumulative(daily, keys, counts)
    daily["user_item_last_purchase_ts"] = daily.groupby(keys, sort=False)[
        "user_item_last_purchase_ts"
    ].ffill()
    daily["event_timestamp"] = daily.pop("day") + ONE_DAY
    return daily


def user_item_index(pairs: pd.DataFrame) -> pd.DataFrame:
    """`user_item_stats` regrouped by user: one row per user and active day holding, as
    aligned arrays, every item the user has a pair row for (`item_ids`) and each pair
    feature's value as of that day (timestamps as Unix seconds, NaN when missing).

    The latest row at or before a time holds exactly the pair rows a point-in-time read at
    that time sees, so serving reads all of a user's pairs with one key instead of one key
    per candidate.
    """
    features = [c for c in pairs.columns if c not in ("user_id", "item_id", "event_timestamp")]
    ordered = pairs.sort_values(["user_id", "event_timestamp", "item_id"], ignore_index=True)
    values = {}
    for name in features:
        column = ordered[name]
        if pd.api.types.is_datetime64_any_dtype(column):
            epoch = pd.Timestamp(0, tz="UTC")
            values[name] = ((column - epoch) / pd.Timedelta(seconds=1)).to_numpy(dtype=float)
        else:
            values[name] = column.to_numpy()
    users = ordered["user_id"].to_numpy()
    stamps = ordered["event_timestamp"].to_numpy()
    items = ordered["item_id"].to_numpy()
    rows: list[tuple] = []
    latest: dict[str, int] = {}  # item -> its latest row, for the current user

    def snapshot(end: int) -> None:
        positions = np.fromiter((latest[item] for item in sorted(latest)), dtype=np.intp)
        rows.append((users[end], stamps[end], items[positions].tolist(),
                     *(values[name][positions].tolist() for name in features)))

    for row in range(len(ordered)):
        if row and users[row] != users[row - 1]:
            snapshot(row - 1)
            latest = {}
        elif row and stamps[row] != stamps[row - 1]:
            snapshot(row - 1)
        latest[items[row]] = row
    if len(ordered):
        snapshot(len(ordered) - 1)
    frame = pd.DataFrame(rows, columns=["user_id", "event_timestamp", "item_ids", *features])
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame


def _window_sum(daily: np.ndarray, window: int) -> np.ndarray:
    """Trailing sum over `window` days (inclusive of the day itself) along axis 1."""
    total = np.cumsum(daily, axis=1)
    shifted = np.zeros_like(total)
    shifted[:, window:] = total[:, :-window]
    return total - shifted


def _distinct_in_window(item_codes, buyer_codes, days, window, shape) -> np.ndarray:
    """Distinct buyers of each item within a trailing window, per day.

    A buyer counts from each purchase day until `window` days later or until their next
    purchase of the item, whichever comes first, so overlapping purchases count once.
    """
    pairs = pd.DataFrame({"item": item_codes, "buyer": buyer_codes, "day": days})
    pairs = pairs.drop_duplicates().sort_values(["item", "buyer", "day"])
    next_day = pairs.groupby(["item", "buyer"])["day"].shift(-1).fillna(shape[1] + window)
    leaves = np.minimum(next_day.to_numpy(dtype=np.int64), pairs["day"].to_numpy() + window)
    deltas = np.zeros((shape[0], shape[1] + 1))
    np.add.at(deltas, (pairs["item"].to_numpy(), pairs["day"].to_numpy()), 1)
    inside = leaves < shape[1]
    np.add.at(deltas, (pairs["item"].to_numpy()[inside], leaves[inside]), -1)
    return np.cumsum(deltas[:, :-1], axis=1)


def _rebuy_rate(item_codes, buyer_codes, days, window, shape) -> np.ndarray:
    """Per item and day, the share of the item's earlier buyers (first purchase more than
    `window` days before) who bought it again within the trailing window.

    Shrunk toward 10% (+0.5 / +5) so an item with few earlier buyers says little. It moves
    with the season: last winter's buyers of a Christmas item come back in the autumn.
    """
    in_window = _distinct_in_window(item_codes, buyer_codes, days, window, shape)
    pairs = pd.DataFrame({"item": item_codes, "buyer": buyer_codes, "day": days})
    first = pairs.groupby(["item", "buyer"])["day"].min()
    first_buyers = np.zeros(shape)
    np.add.at(first_buyers, (first.index.get_level_values("item"), first.to_numpy()), 1)
    ever = np.cumsum(first_buyers, axis=1)  # first bought on or before each day
    earlier = np.zeros(shape)
    earlier[:, window:] = ever[:, :-window]  # first bought before the window
    returning = in_window - (ever - earlier)
    return (returning + 0.5) / (earlier + 5)


def item_stats(events: pd.DataFrame) -> pd.DataFrame:
    """Windowed demand, distinct buyers, rebuy rate, trend and price statistics per item."""
    sales = _sales(events)
    if sales.empty:
        return pd.DataFrame(columns=["item_id", "event_timestamp"])
    first_day = sales["day"].min()
    day_index = ((sales["day"] - first_day) // ONE_DAY).to_numpy()
    item_ids, item_codes = np.unique(sales["item_id"].to_numpy(dtype=str), return_inverse=True)
    shape = (len(item_ids), int(day_index.max()) + 1)
    purchase = (sales["event_type"] == "purchase").to_numpy()

    def daily_sum(values: np.ndarray, mask: np.ndarray = purchase) -> np.ndarray:
        grid = np.zeros(shape)
        np.add.at(grid, (item_codes[mask], day_index[mask]), values[mask])
        return grid

    purchases = daily_sum(np.ones(len(sales)))
    units = daily_sum(sales["quantity"].to_numpy(dtype=float))
    revenue = daily_sum((sales["quantity"] * sales["unit_price"]).to_numpy())
    guest_key = "session:" + sales["session_id"].astype(str)
    buyers = sales["user_id"].fillna(guest_key).to_numpy(dtype=str)
    _, buyer_codes = np.unique(buyers, return_inverse=True)

    columns: dict[str, np.ndarray] = {}
    for window in ITEM_WINDOWS_DAYS:
        columns[f"item_purchases_{window}d"] = _window_sum(purchases, window)
        columns[f"item_buyers_{window}d"] = _distinct_in_window(
            item_codes[purchase], buyer_codes[purchase], day_index[purchase], window, shape
        )
    known = purchase & sales["user_id"].notna().to_numpy()  # guests are never seen again
    columns[f"item_rebuy_rate_{REBUY_WINDOW_DAYS}d"] = _rebuy_rate(
        item_codes[known], buyer_codes[known], day_index[known], REBUY_WINDOW_DAYS, shape)
    rate_7d = columns["item_purchases_7d"] / 7
    rate_30d = columns["item_purchases_30d"] / 30
    columns["item_trend_7d_30d"] = np.divide(
        rate_7d - rate_30d, rate_30d, out=np.zeros(shape), where=rate_30d > 0
    )
    units_30d, revenue_30d = _window_sum(units, 30), _window_sum(revenue, 30)
    columns["item_price_mean_30d"] = np.divide(
        revenue_30d, units_30d, out=np.full(shape, np.nan), where=units_30d > 0
    )
    ordered = sales.assign(code=item_codes, d=day_index)[purchase].sort_values(["ts", "event_id"])
    last_price = _daily_price(ordered, shape, "last")
    columns["item_price_last"] = pd.DataFrame(last_price).ffill(axis=1).to_numpy()
    columns["item_price_min"] = np.fmin.accumulate(_daily_price(ordered, shape, "min"), axis=1)
    columns["item_price_max"] = np.fmax.accumulate(_daily_price(ordered, shape, "max"), axis=1)

    first_active = np.full(len(item_ids), shape[1])
    np.minimum.at(first_active, item_codes, day_index)
    active = np.arange(shape[1])[None, :] >= first_active[:, None]
    rows, days = np.nonzero(active)
    table = pd.DataFrame({"item_id": item_ids[rows]})
    for name, grid in columns.items():
        table[name] = grid[rows, days]
    for window in ITEM_WINDOWS_DAYS:
        for prefix in ("item_purchases", "item_buyers"):
            table[f"{prefix}_{window}d"] = table[f"{prefix}_{window}d"].astype("int64")
    table["event_timestamp"] = first_day + (days + 1) * ONE_DAY
    return _drop_unchanged(table, key="item_id")


def _daily_price(ordered: pd.DataFrame, shape, how: str) -> np.ndarray:
    """Item x day grid of the day's `how` ("last", "min", "max") purchase price, else NaN."""
    grid = np.full(shape, np.nan)
    price = ordered.groupby(["code", "d"])["unit_price"].agg(how)
    codes, days = (price.index.get_level_values(level).to_numpy() for level in (0, 1))
    grid[codes, days] = price.to_numpy()
    return grid


def _drop_unchanged(table: pd.DataFrame, key: str) -> pd.DataFrame:
    """Keep each entity's first row and every row whose feature values changed."""
    values = table.drop(columns=[key, "event_timestamp"])
    previous = values.shift(1)
    same_values = ((values == previous) | (values.isna() & previous.isna())).all(axis=1)
    same_entity = table[key].eq(table[key].shift(1))
    return table[~(same_values & same_entity)].reset_index(drop=True)


def build_feature_tables(events_dir: Path, catalog: pd.DataFrame, out_dir: Path) -> dict[str, int]:
    """Compute every feature table from the event log into `out_dir`; rows per table."""
    events = EventLog(events_dir).read()
    pairs = user_item_stats(events)
    tables = {
        "user_stats": user_stats(events, catalog),
        "item_stats": item_stats(events),
        "user_item_stats": pairs,
        USER_ITEM_INDEX: user_item_index(pairs),
    }
    for name, table in tables.items():
        arrow_table = pa.Table.from_pandas(table, preserve_index=False)
        write_parquet_atomic(arrow_table, out_dir / f"{name}.parquet")
    return {name: len(table) for name, table in tables.items()}
