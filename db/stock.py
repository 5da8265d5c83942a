"""Stock on hand reported by the sales channels, and the repricing a stock change asks for.

A channel reports an item's stock on hand with an `inventory` event. A report is the
channel's allocation, so an item's stock is the sum of its channels' latest reports
(`item_stock.stock_on_hand`). Latest means latest by the report's time, then by its event
id, so the stored state doesn't depend on arrival order: a replayed report, or an older one
arriving late, changes nothing.

`record_stock` records a batch of reports in one transaction. In the same transaction it
marks (`reprice_requested_at`) each item whose stock moved beyond the threshold
(`StockThreshold`, the guardrails' `reprice_on_stock`) from the stock its prices were last
suggested with. The mark is durable: a crash before the repricing loses nothing, and
`pending_repricing` lists the marked items. An item's first report marks it, because no
price has been suggested with its reported stock yet. `repriced` records the stock a
repricing used and clears the mark, unless the stock has moved beyond the threshold again
since then.

Concurrent writers of an item queue on its `item_stock` row (`FOR UPDATE` on PostgreSQL).
On SQLite, each transaction writes first, which takes the database's write lock before
anything is read.
"""

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime

import pandas as pd
from sqlalchemy import Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.tables import ChannelStockRow, ItemStockRow
from models.pricing.guardrails import StockThreshold

REPORT_COLUMNS = ("event_id", "item_id", "channel", "ts", "stock_on_hand")
"""The columns of an `inventory` event that `record_stock` reads."""
ITEM_CHUNK = 400
"""Items per statement (bound parameters stay well under every limit)."""


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), ITEM_CHUNK):
        yield items[start:start + ITEM_CHUNK]


def _latest_reports(events: pd.DataFrame) -> pd.DataFrame:
    """The latest report per item x channel of `events` (ValueError when a column is missing
    or a stock is missing or negative)."""
    missing = [column for column in REPORT_COLUMNS if column not in events.columns]
    if missing:
        raise ValueError(f"inventory events lack the column(s): {', '.join(missing)}")
    stock = pd.to_numeric(events["stock_on_hand"], errors="coerce")
    if (stock.isna() | (stock < 0)).any():
        raise ValueError("inventory events need a stock_on_hand >= 0 on every row")
    reports = events[list(REPORT_COLUMNS)].assign(
        ts=pd.to_datetime(events["ts"], utc=True), stock_on_hand=stock.astype(int))
    return (reports.sort_values(["ts", "event_id"], kind="stable")
            .drop_duplicates(["item_id", "channel"], keep="last"))


def _locked_items(session: Session, items: Sequence[str], at: datetime
                  ) -> dict[str, ItemStockRow]:
    """The `item_stock` rows of `items`, locked, made first where missing (a placeholder
    stock of 0, recomputed by the caller)."""
    dialect = session.get_bind().dialect.name
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert_(ItemStockRow).on_conflict_do_nothing(index_elements=["item_id"]),
                    [{"item_id": item, "stock_on_hand": 0, "updated_at": at} for item in items])
    rows = session.scalars(select(ItemStockRow).where(ItemStockRow.item_id.in_(items))
                           .order_by(ItemStockRow.item_id).with_for_update())
    return {row.item_id: row for row in rows}


def record_stock(engine: Engine, events: pd.DataFrame, threshold: StockThreshold) -> list[str]:
    """Record `inventory` events (`REPORT_COLUMNS`) in one transaction. Each item x channel
    keeps its latest report, each reported item's stock becomes the sum of its channels'
    reports, and items whose stock `threshold` says moved get a repricing mark. Returns the
    newly marked items, sorted. Recording the same reports again changes nothing."""
    reports = _latest_reports(events)
    at = datetime.now(UTC)
    marked: list[str] = []
    with Session(engine) as session, session.begin():
        for chunk in _chunks(sorted(set(reports["item_id"]))):
            items = _locked_items(session, chunk, at)
            channels = {(row.item_id, row.channel): row for row in session.scalars(
                select(ChannelStockRow).where(ChannelStockRow.item_id.in_(chunk)))}
            for report in reports[reports["item_id"].isin(chunk)].itertuples(index=False):
                reported_at = report.ts.to_pydatetime()
                row = channels.get((report.item_id, report.channel))
                if row is None:
                    row = ChannelStockRow(item_id=report.item_id, channel=report.channel)
                    session.add(row)
                    channels[report.item_id, report.channel] = row
                elif (reported_at, report.event_id) <= (row.reported_at, row.event_id):
                    continue
                row.stock_on_hand, row.reported_at = int(report.stock_on_hand), reported_at
                row.event_id, row.recorded_at = report.event_id, at
            totals = dict.fromkeys(chunk, 0)
            for (item_id, _), row in channels.items():
                totals[item_id] += row.stock_on_hand
            for item_id, total in totals.items():
                item = items[item_id]
                if item.stock_on_hand != total:
                    item.stock_on_hand, item.updated_at = total, at
                if item.reprice_requested_at is None and threshold.moved(item.priced_stock,
                                                                         total):
                    item.reprice_requested_at = at
                    marked.append(item_id)
    return marked


def pending_repricing(engine: Engine) -> list[str]:
    """The items marked for repricing, sorted."""
    with Session(engine) as session:
        return list(session.scalars(
            select(ItemStockRow.item_id).where(ItemStockRow.reprice_requested_at.is_not(None))
            .order_by(ItemStockRow.item_id)))


def stock_totals(engine: Engine) -> dict[str, int]:
    """Every reported item's stock on hand: the sum of its channels' latest reports."""
    with Session(engine) as session:
        rows = session.execute(select(ItemStockRow.item_id, ItemStockRow.stock_on_hand))
        return {item_id: stock for item_id, stock in rows}


def repriced(engine: Engine, stock_used: Mapping[str, int], threshold: StockThreshold
             ) -> list[str]:
    """Record that a repricing of the items of `stock_used` (recorded items) ran with that
    stock, in one transaction. Each item's mark is cleared unless its stock moved beyond
    `threshold` from the stock used meanwhile. Returns the items still marked, sorted."""
    at = datetime.now(UTC)
    still: list[str] = []
    with Session(engine) as session, session.begin():
        for chunk in _chunks(sorted(stock_used)):
            session.execute(update(ItemStockRow), [
                {"item_id": item, "priced_stock": stock_used[item], "priced_at": at}
                for item in chunk])
            for row in session.scalars(select(ItemStockRow).where(
                    ItemStockRow.item_id.in_(chunk)).with_for_update()):
                if threshold.moved(row.priced_stock, row.stock_on_hand):
                    row.reprice_requested_at = row.reprice_requested_at or at
                    still.append(row.item_id)
                else:
                    row.reprice_requested_at = None
    return sorted(still)
