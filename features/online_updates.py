"""Real-time updates of the online features from a batch of new events.

The stream consumer takes validated events the log does not hold yet, and an
`OnlineFeatureWriter` plans the online rows they lead to (reading the rows they touch: one
`online_read` per view, adding the events to them) and writes them (one `online_write_batch`
per view), in the layout serving reads: `user_stats`, `item_stats`, `user_item_stats` and the
per-user `user_item_index` (aligned arrays sorted by item, as `transforms.user_item_index`
lays them out). `apply_events` does both in one call.

Exact, as the batch build of the whole history gives them (events arriving in time order):
every `user_item_stats` feature and the index; the user's monetary value, returns, distinct
items, first and last purchase; category shares while a user's units bought stay below a
million (old units are share x total, rounded to whole units); item price last, min, max.

Approximations until the next nightly build, which recomputes everything exactly:
- `user_frequency`: a session of the batch is a new order when its first purchase is later
  than the stored last purchase. A session continuing in a later batch with later purchases
  counts again; another order at the very instant of the stored last purchase does not.
- Windowed item counters only grow: decay waits for the next build. A purchase adds 1 to
  each window's purchases; a buyer adds 1 to a window's buyers when their previous purchase
  of the item (a known user's from the index, a guest session's within the batch) is more
  than the window's days before, so not counted in the stored row yet. While no purchase is
  due to leave a window, the counts equal the batch's. `item_trend_7d_30d` is recomputed
  from the updated counts; `item_rebuy_rate_30d` and `item_price_mean_30d` stay as last
  materialized (missing for an item new to the store).
- Categories come from `categories` at the time of the purchase; returns change no item
  feature and write no item row.

Write timestamps. Feast's Redis store skips a row whose event timestamp is not later than
the stored one; SQLite overwrites whatever it holds (and keeps whole seconds). A batch row
is dated the end of the day it summarises; a streamed row is dated its entity's latest event
in the batch, or 1 us after the stored row if that is later (an event arriving after its day
was materialized). So a streamed row always replaces the row it was computed from, and the
next materialization of batch rows covering its events (dated the end of their day, hence
later) replaces it, correcting the approximations; re-materializing older batch rows leaves
it on Redis, while SQLite takes whichever row was written last. All of a user's rows (stats,
index, pairs) get the user's timestamp.

Planning the same events twice counts them twice: plan each event once (the consumer plans
only events the log does not hold yet). Planned rows are absolute values: writing them again
changes nothing. Plans read what is stored, so two writers must not plan and write the same
users or items at once: the caller serialises `plan` and `write` under one lock (the
consumer's). A materialization between a plan and its write wins on Redis when its rows are
newer; on SQLite the write replaces them.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import chain, pairwise
from typing import Any

import numpy as np
import pandas as pd
from feast import FeatureStore, FeatureView
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import DoubleList, Int64List, StringList, Value
from feast.type_map import NULL_TIMESTAMP_INT_VALUE
from feast.types import Array, Float64, Int64, String, UnixTimestamp

from features.online import ViewColumns, entity_key, zoned
from features.transforms import ITEM_WINDOWS_DAYS, USER_ITEM_INDEX

USER_STATS = "user_stats"
ITEM_STATS = "item_stats"
USER_ITEM_STATS = "user_item_stats"
PAIR_COUNTS = ["user_item_times_bought", "user_item_units_bought", "user_item_units_returned"]
PAIR_LAST = "user_item_last_purchase_ts"
USER_COUNTS = ["user_frequency", "user_distinct_items", "user_returns"]
EPOCH = pd.Timestamp(0, tz="UTC")
ONE_SECOND = pd.Timedelta(seconds=1)
ONE_DAY = pd.Timedelta(days=1)
AFTER_STORED = pd.Timedelta(microseconds=1)


@dataclass(frozen=True)
class OnlineRows:
    """The rows a batch of events leads to, by feature view: join keys, feature values and
    `event_timestamp`, the write timestamp. Values are absolute, so writing them again (a
    consumer finishing a stopped one's batch) changes nothing."""

    views: dict[str, pd.DataFrame]

    @property
    def users(self) -> int:
        """Users with new `user_stats` and `user_item_index` rows."""
        return len(self.views.get(USER_STATS, ()))

    @property
    def items(self) -> int:
        """Items with a new `item_stats` row."""
        return len(self.views.get(ITEM_STATS, ()))

    @property
    def pairs(self) -> int:
        """User x item pairs with a new `user_item_stats` row."""
        return len(self.views.get(USER_ITEM_STATS, ()))

    def changed(self) -> tuple[list[str], list[str]]:
        """The users and the items whose rows these are (what cached answers depend on)."""
        users = self.views.get(USER_STATS)
        items = self.views.get(ITEM_STATS)
        return ([] if users is None else users["user_id"].tolist(),
                [] if items is None else items["item_id"].tolist())


@dataclass(frozen=True)
class _Stored:
    """A view's stored rows for some keys: feature columns (NaN, NaT or None when missing)
    and each row's event timestamp (NaT when missing), indexed by the keys."""

    values: pd.DataFrame
    stamps: pd.Series


class OnlineFeatureWriter:
    """Turns batches of events into online rows (`plan`: reads the stored rows they touch,
    one `online_read` per view) and writes them (`write`: one `online_write_batch` per
    view). The feature views are looked up once: a new `apply` needs a new writer."""

    def __init__(self, store: FeatureStore, categories: pd.Series):
        """`categories` maps item ids to categories (a missing item's is "unknown")."""
        self.store = store
        self.categories = categories
        self._provider = store._get_provider()
        self._views = {name: store.get_feature_view(name)
                       for name in (USER_STATS, USER_ITEM_INDEX, USER_ITEM_STATS, ITEM_STATS)}

    def plan(self, events: pd.DataFrame) -> OnlineRows:
        """The rows canonical events (as `validate_events` returns them: any event types,
        guests without a user id) lead to, on top of the stored ones (module docstring)."""
        sales = events[events["event_type"].isin(["purchase", "return"])]
        sales = sales.sort_values(["ts", "event_id"], kind="stable", ignore_index=True)
        known = sales[sales["user_id"].notna()]
        views: dict[str, pd.DataFrame] = {}
        stored_pairs = pd.DataFrame()
        if len(known):
            stored_pairs = self._plan_users(known, views)
        bought = sales[sales["event_type"] == "purchase"]
        if len(bought):
            self._plan_items(bought, stored_pairs, views)
        return OnlineRows(views)

    def write(self, rows: OnlineRows) -> None:
        """Write planned rows to the online store."""
        for name, frame in rows.views.items():
            self._write(self._views[name], frame)

    def _plan_users(self, known: pd.DataFrame, views: dict[str, pd.DataFrame]) -> pd.DataFrame:
        """Add the signed-in users' rows of all three user views to `views`; returns their
        pairs as stored before (see `_pairs_of`)."""
        users = pd.Index(np.sort(known["user_id"].unique()), name="user_id")
        stats, index = (self._read(self._views[name], users)
                        for name in (USER_STATS, USER_ITEM_INDEX))
        stored_pairs = _pairs_of(index.values)
        stamps = _stamps(known.groupby("user_id")["ts"].max(), stats.stamps, index.stamps)
        pairs = _updated_pairs(stored_pairs, known)
        touched = pairs.loc[known.groupby(["user_id", "item_id"]).size().index].reset_index()
        touched[PAIR_LAST] = _from_seconds(touched[PAIR_LAST])
        views[USER_ITEM_STATS] = _dated(touched, stamps)
        views[USER_ITEM_INDEX] = _dated(_index_rows(pairs, users), stamps)
        views[USER_STATS] = _dated(
            _user_stats(stats.values, stored_pairs, known, self.categories), stamps)
        return stored_pairs

    def _plan_items(self, bought: pd.DataFrame, stored_pairs: pd.DataFrame,
                    views: dict[str, pd.DataFrame]) -> None:
        """Add the bought items' `item_stats` rows (guests' purchases too) to `views`."""
        items = pd.Index(np.sort(bought["item_id"].unique()), name="item_id")
        stored = self._read(self._views[ITEM_STATS], items)
        stamps = _stamps(bought.groupby("item_id")["ts"].max(), stored.stamps)
        views[ITEM_STATS] = _dated(_item_stats(stored.values, bought, stored_pairs), stamps)

    def _read(self, view: FeatureView, keys: pd.Index) -> _Stored:
        """One `online_read` of a view's rows for `keys` (named as the view's join key)."""
        columns = ViewColumns(view, [field.name for field in view.features])
        protos = [entity_key({keys.name: key}) for key in keys]
        found = self._provider.online_read(self.store.config, view, protos, list(columns.names))
        stamps = pd.to_datetime([stamp for stamp, _ in found], utc=True)
        return _Stored(zoned(columns.columns(found), index=keys),
                       pd.Series(stamps, index=keys))

    def _write(self, view: FeatureView, rows: pd.DataFrame) -> None:
        """One `online_write_batch` of `rows` as Feast's value protos."""
        keys = [entity_key(key) for key in rows[view.join_keys].to_dict("records")]
        columns = {field.name: _protos(rows[field.name], field.dtype)
                   for field in view.features}
        values = [dict(zip(columns, row, strict=True))
                  for row in zip(*columns.values(), strict=True)]
        stamps = pd.DatetimeIndex(rows["event_timestamp"]).to_pydatetime().tolist()
        data: list[tuple[EntityKey, dict[str, Value], datetime, datetime | None]] = list(zip(
            keys, values, stamps, [None] * len(keys), strict=True))
        self._provider.online_write_batch(self.store.config, view, data, progress=None)


def apply_events(store: FeatureStore, events: pd.DataFrame,
                 categories: pd.Series) -> OnlineRows:
    """Plan and write the rows of a batch of events in one go (see `OnlineFeatureWriter`)."""
    writer = OnlineFeatureWriter(store, categories)
    rows = writer.plan(events)
    writer.write(rows)
    return rows


def _protos(values: pd.Series, dtype) -> list[Value]:
    """A column as Feast value protos, encoded as Feast encodes a materialized column (a
    missing number is an empty value, a missing timestamp Feast's null timestamp)."""
    if dtype == Int64:
        return [Value(int64_val=v) for v in values.tolist()]
    if dtype == Float64:
        return [Value() if v != v else Value(double_val=v) for v in values.tolist()]
    if dtype == UnixTimestamp:
        seconds = _naive_us(values).astype("datetime64[s]").astype(np.int64)
        seconds[values.isna().to_numpy()] = NULL_TIMESTAMP_INT_VALUE
        return [Value(unix_timestamp_val=v) for v in seconds.tolist()]
    if dtype == Array(String):
        return [Value(string_list_val=StringList(val=v)) for v in values]
    if dtype == Array(Int64):
        return [Value(int64_list_val=Int64List(val=v)) for v in values]
    if dtype == Array(Float64):
        return [Value(double_list_val=DoubleList(val=v)) for v in values]
    raise TypeError(f"no proto encoding for {values.name} ({dtype})")


def _naive_us(stamps: pd.Series) -> np.ndarray:
    """UTC datetimes as naive `datetime64[us]` (NaT stays NaT)."""
    return stamps.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[us]")


def _pick(choose: np.ufunc, first: pd.Series, second: pd.Series) -> pd.Series:
    """`choose` (`np.fmin`, `np.fmax`) of two UTC datetime series, on `first`'s index; NaT
    only where both are."""
    both = choose(_naive_us(first), _naive_us(second.reindex(first.index)))
    return pd.Series(pd.DatetimeIndex(both).tz_localize("UTC"), index=first.index)


def _stamps(latest_event: pd.Series, *stored: pd.Series) -> pd.Series:
    """Write timestamps: each entity's latest event, or 1 us after its stored rows if that
    is later."""
    newest = stored[0]
    for other in stored[1:]:
        newest = _pick(np.fmax, newest, other)
    return _pick(np.fmax, latest_event, newest + AFTER_STORED)


def _dated(rows: pd.DataFrame, stamps: pd.Series) -> pd.DataFrame:
    """`rows` with the `event_timestamp` of their entity (`stamps` by the key it names)."""
    return rows.assign(event_timestamp=stamps.reindex(rows[stamps.index.name]).array)


def _seconds(stamps: pd.Series) -> pd.Series:
    """UTC datetimes as Unix seconds (NaN for NaT), as `transforms.user_item_index` has them."""
    return (stamps - EPOCH) / ONE_SECOND


def _from_seconds(seconds: pd.Series) -> pd.Series:
    """Unix seconds as UTC datetimes to the microsecond (NaT for NaN)."""
    micros = np.rint(seconds.to_numpy(dtype=float) * 1e6)
    known = ~np.isnan(micros)
    stamps = np.full(len(micros), np.datetime64("NaT"), dtype="datetime64[us]")
    stamps[known] = micros[known].astype(np.int64)
    return pd.Series(pd.DatetimeIndex(stamps).tz_localize("UTC"), index=seconds.index)


def _explode(keys: pd.Index, lists: dict[str, Sequence]) -> pd.DataFrame:
    """Aligned per-key lists (None: empty) as one long frame, the key in column `keys.name`."""
    first = next(iter(lists.values()))
    lengths = np.fromiter((len(v) if v else 0 for v in first), dtype=np.intp, count=len(keys))
    long: dict[str, Any] = {keys.name: np.repeat(keys.to_numpy(), lengths)}
    for name, values in lists.items():
        long[name] = list(chain.from_iterable(v for v in values if v))
    return pd.DataFrame(long)


def _lists(frame: pd.DataFrame, keys: pd.Index, columns: list[str]) -> pd.DataFrame:
    """`frame` (sorted by the key column `keys.name`, in the order of `keys`) as one row of
    lists per key of `keys`: empty lists for keys without rows."""
    codes = keys.get_indexer(frame[keys.name])
    bounds = np.searchsorted(codes, np.arange(len(keys) + 1)).tolist()
    spans = list(pairwise(bounds))
    grouped = {}
    for name in columns:
        values = frame[name].tolist()
        grouped[name] = [values[start:end] for start, end in spans]
    return pd.DataFrame(grouped, index=keys)


def _pairs_of(index: pd.DataFrame) -> pd.DataFrame:
    """A user's stored index arrays as one row per (user, item): pair counts and last
    purchase as Unix seconds, all float (NaN when missing)."""
    names = ["item_ids", *PAIR_COUNTS, PAIR_LAST]
    pairs = _explode(index.index, {name: index[name] for name in names})
    pairs = pairs.rename(columns={"item_ids": "item_id"}).set_index(["user_id", "item_id"])
    return pairs.astype(float)


def _updated_pairs(stored: pd.DataFrame, known: pd.DataFrame) -> pd.DataFrame:
    """Every pair of the batch's users with the batch added, sorted by user and item as
    `transforms.user_item_index` sorts them."""
    purchase = known["event_type"] == "purchase"
    quantity = known["quantity"].astype("int64")
    added = pd.DataFrame({
        "user_id": known["user_id"], "item_id": known["item_id"],
        PAIR_COUNTS[0]: purchase.astype("int64"),
        PAIR_COUNTS[1]: quantity.where(purchase, 0),
        PAIR_COUNTS[2]: quantity.where(~purchase, 0),
        PAIR_LAST: _seconds(known["ts"].where(purchase)),
    }).groupby(["user_id", "item_id"]).agg({**dict.fromkeys(PAIR_COUNTS, "sum"),
                                            PAIR_LAST: "max"})
    rows = stored.index.union(added.index).sort_values()
    stored, added = stored.reindex(rows), added.reindex(rows)
    pairs = stored[PAIR_COUNTS].fillna(0).add(added[PAIR_COUNTS].fillna(0)).astype("int64")
    pairs[PAIR_LAST] = np.fmax(stored[PAIR_LAST], added[PAIR_LAST])
    return pairs


def _index_rows(pairs: pd.DataFrame, users: pd.Index) -> pd.DataFrame:
    """The `user_item_index` row of each user: their pairs as aligned arrays."""
    rows = _lists(pairs.reset_index(), users, ["item_id", *PAIR_COUNTS, PAIR_LAST])
    return rows.rename(columns={"item_id": "item_ids"}).reset_index()


def _user_stats(stored: pd.DataFrame, stored_pairs: pd.DataFrame, known: pd.DataFrame,
                categories: pd.Series) -> pd.DataFrame:
    """The batch's users' `user_stats` rows with the batch added."""
    purchase = known["event_type"] == "purchase"
    bought = known[purchase]
    orders = bought.groupby(["user_id", "session_id"])["ts"].min().reset_index()
    last_before = stored["user_last_purchase_ts"].reindex(orders["user_id"]).to_numpy()
    new_items = bought.groupby(["user_id", "item_id"]).size().index
    bought_before = stored_pairs[PAIR_COUNTS[0]].reindex(new_items).fillna(0).to_numpy()
    amount = known["quantity"] * known["unit_price"]
    new_order = pd.isna(last_before) | (orders["ts"].to_numpy() > last_before)
    added = pd.concat([
        pd.DataFrame({"user_frequency": new_order.astype("int64")}, index=orders["user_id"]),
        pd.DataFrame({"user_distinct_items": (bought_before == 0).astype("int64")},
                     index=new_items.get_level_values("user_id")),
        pd.DataFrame({"user_returns": (~purchase).astype("int64").to_numpy(),
                      "user_monetary": amount.where(purchase, -amount).to_numpy()},
                     index=known["user_id"]),
    ]).groupby(level=0).sum().reindex(stored.index)
    stats = stored[USER_COUNTS].fillna(0).add(added[USER_COUNTS]).astype("int64")
    stats["user_monetary"] = (stored["user_monetary"].fillna(0) + added["user_monetary"]).round(2)
    bought_ts = bought.groupby("user_id")["ts"].agg(["min", "max"])
    stats["user_first_purchase_ts"] = _pick(np.fmin, stored["user_first_purchase_ts"],
                                            bought_ts["min"])
    stats["user_last_purchase_ts"] = _pick(np.fmax, stored["user_last_purchase_ts"],
                                           bought_ts["max"])
    shares = _category_shares(stored, stored_pairs, bought, categories)
    stats["user_category_names"] = shares["category"]
    stats["user_category_shares"] = shares["share"]
    return stats.reset_index()


def _category_shares(stored: pd.DataFrame, stored_pairs: pd.DataFrame, bought: pd.DataFrame,
                     categories: pd.Series) -> pd.DataFrame:
    """Per user, the categories bought so far (sorted) and each one's share of units, rounded
    as `transforms.user_stats` rounds them. A category's units so far are its stored share
    times the units the index says the user bought, rounded to whole units."""
    old = _explode(stored.index, {"category": stored["user_category_names"],
                                  "share": stored["user_category_shares"]})
    total = stored_pairs[PAIR_COUNTS[1]].groupby(level="user_id").sum()
    old["units"] = np.rint(old["share"].astype(float) * total.reindex(old["user_id"]).to_numpy())
    new = pd.DataFrame({"user_id": bought["user_id"],
                        "category": bought["item_id"].map(categories).fillna("unknown"),
                        "units": bought["quantity"].astype(float)})
    units = pd.concat([old.drop(columns="share"), new]).groupby(["user_id", "category"])["units"]
    units = units.sum()
    units = units[units > 0]
    share = (units / units.groupby(level="user_id").transform("sum")).round(6)
    return _lists(share.rename("share").reset_index(), stored.index, ["category", "share"])


def _item_stats(stored: pd.DataFrame, bought: pd.DataFrame,
                stored_pairs: pd.DataFrame) -> pd.DataFrame:
    """The bought items' `item_stats` rows with the batch's purchases (guests' too) added."""
    stats = stored.copy()
    gaps = _days_since_previous_purchase(bought, stored_pairs).to_numpy()
    added = pd.DataFrame(
        {f"item_{kind}_{window}d": np.ones(len(gaps), np.int64) if kind == "purchases"
         else (gaps > window).astype(np.int64)
         for window in ITEM_WINDOWS_DAYS for kind in ("purchases", "buyers")},
        index=bought["item_id"]).groupby(level=0).sum()
    counts = list(added.columns)
    stats[counts] = stats[counts].fillna(0).add(added.reindex(stats.index)).astype("int64")
    rate_7d, rate_30d = stats["item_purchases_7d"] / 7, stats["item_purchases_30d"] / 30
    stats["item_trend_7d_30d"] = ((rate_7d - rate_30d) / rate_30d).where(rate_30d > 0, 0.0)
    price = bought.groupby("item_id")["unit_price"].agg(["last", "min", "max"])
    stats["item_price_last"] = price["last"]
    stats["item_price_min"] = np.fmin(stats["item_price_min"], price["min"])
    stats["item_price_max"] = np.fmax(stats["item_price_max"], price["max"])
    return stats.reset_index()


def _days_since_previous_purchase(bought: pd.DataFrame, stored_pairs: pd.DataFrame) -> pd.Series:
    """Per purchase, UTC days from the buyer's previous purchase of the item (infinite for
    none): an earlier one of the batch, else a known user's last one in the index. A guest's
    buyer is their session, as in `transforms.item_stats`."""
    buyer = bought["user_id"].fillna("session:" + bought["session_id"].astype(str))
    day = bought["ts"].dt.floor("D")
    previous = day.groupby([buyer, bought["item_id"]]).shift(1)
    known = bought[bought["user_id"].notna()]
    if len(known):
        keys = pd.MultiIndex.from_frame(known[["user_id", "item_id"]])
        last = stored_pairs[PAIR_LAST].reindex(keys).set_axis(known.index)
        previous = previous.fillna(_from_seconds(last).dt.floor("D"))
    return ((day - previous) / ONE_DAY).fillna(np.inf)
