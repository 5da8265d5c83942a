"""Stock-triggered repricing: the sales channels' stock reports start targeted suggestion runs.

The stream consumer calls `handle_inventory` with each batch of events. It records the
`inventory` events in the service database (`db.stock.record_stock`) and marks the items
whose stock moved beyond the guardrails' `reprice_on_stock` threshold, in one transaction.
It doesn't train or read the event log, so the consumer never waits on heavy work.

`reprice_pending` runs apart from the consumer, for example in the background after a batch
that marked items, or on a schedule. It writes the channels' stock into the stored catalog
(`stock_on_hand`, the stock the guardrails price with), then makes one targeted suggestion
run (`run_suggest` with `items`) for every marked item that has sales to price from. The
run's suggestions go through the approval policy, and approved prices go to the delivery
outbox. Items without sales are left out and their marks cleared. A failed run leaves every
mark in place for the next call.
"""

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds

import db
from db.stock import pending_repricing, record_stock, repriced, stock_totals
from features.errors import InputError
from features.ingest import read_catalog, upsert_catalog
from features.schemas import EVENT_ARROW_SCHEMA, STOCK_EVENT_TYPES
from features.settings import Settings
from models.pricing.demand import Period
from models.pricing.guardrails import Guardrails, load_guardrails
from training.pricing.suggest import run_suggest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RepricingInputs:
    """The inputs of the repricing runs, as `tailor pricing suggest` takes them. `catalog`
    is the stored Parquet catalog, because the channels' stock is written into it.
    `guardrails` defaults to the default guardrails, and its `reprice_on_stock` is the
    trigger. `approval_policy` defaults to `settings.approval_policy`."""

    events_dir: Path
    catalog: Path
    channels: Path
    guardrails: Path | None = None
    channel_prices: Path | None = None
    approval_policy: Path | None = None
    period: Period = "W"

    def rules(self) -> Guardrails:
        """The guardrails of the runs."""
        return load_guardrails(self.guardrails) if self.guardrails else Guardrails()


@dataclass(frozen=True)
class RepricingReport:
    """What `reprice_pending` did. `batch_id` is the stored batch, or None when no run was
    made. `repriced` holds the items priced. `unpriceable` holds the items left out because
    they have no sales to price from. `pending` holds the items still marked, either because
    their stock moved again during the run or because the run failed (`error`)."""

    batch_id: str | None
    repriced: list[str]
    unpriceable: list[str]
    pending: list[str]
    error: str | None = None


def handle_inventory(settings: Settings, events: pd.DataFrame, inputs: RepricingInputs
                     ) -> list[str]:
    """Record the stock reports (`inventory` events) among canonical `events` and mark the
    items whose stock moved beyond the threshold. Returns the newly marked items, which
    `reprice_pending` will reprice."""
    reports = events[events["event_type"].isin(STOCK_EVENT_TYPES)]
    if reports.empty:
        return []
    with db.service_database(settings) as engine:
        return record_stock(engine, reports, inputs.rules().reprice_on_stock)


def sync_catalog_stock(catalog_file: Path, totals: Mapping[str, int]) -> list[str]:
    """Set the `stock_on_hand` of the stored catalog's items to the channels' stock in
    `totals` (item -> units), rewriting the catalog atomically only when some item's stock
    differs. Returns those items. Items missing from the catalog are skipped."""
    if catalog_file.suffix != ".parquet":
        raise InputError(f"{catalog_file}: the channels' stock goes into the stored catalog, "
                         "a .parquet file")
    catalog = read_catalog(catalog_file)
    reported = catalog[catalog["item_id"].isin(totals)]
    stock = reported["item_id"].map(totals)
    differs = reported["stock_on_hand"] != stock
    changed = reported[differs].assign(stock_on_hand=stock[differs])
    if not changed.empty:
        upsert_catalog(catalog_file, changed)
    return sorted(changed["item_id"])


def _sold(events_dir: Path, items: Collection[str]) -> set[str]:
    """The items among `items` with a purchase in the event log: the only items a suggestion
    run can price."""
    log = ds.dataset(events_dir, format="parquet", schema=EVENT_ARROW_SCHEMA)
    sold = log.to_table(columns=["item_id"], filter=(ds.field("event_type") == "purchase")
                        & ds.field("item_id").isin(list(items)))
    return set(sold.column("item_id").to_pylist())


def reprice_pending(settings: Settings, inputs: RepricingInputs) -> RepricingReport:
    """Reprice the items marked for repricing in one targeted suggestion run, with the
    channels' stock written into the catalog first, then clear their marks with the stock
    used. A failed run is logged and returned in the report, and leaves every mark in place
    (as does a failure to clear them, which only costs a second run)."""
    with db.service_database(settings) as engine:
        pending = pending_repricing(engine)
        totals = stock_totals(engine)
    if not pending:
        return RepricingReport(None, [], [], [])
    try:
        threshold = inputs.rules().reprice_on_stock
        sync_catalog_stock(inputs.catalog, totals)
        sold = _sold(inputs.events_dir, pending)
        priceable = [item for item in pending if item in sold]
        batch_id = None
        if priceable:
            batch_id, _ = run_suggest(
                settings, inputs.events_dir, inputs.catalog, inputs.channels, inputs.guardrails,
                inputs.period, channel_prices_file=inputs.channel_prices, items=priceable,
                approval_policy_file=inputs.approval_policy)
    except Exception as error:
        logger.exception("repricing %d item(s) after stock changes failed; they stay pending",
                         len(pending))
        return RepricingReport(None, [], [], pending, error=str(error) or repr(error))
    unpriceable = [item for item in pending if item not in sold]
    if unpriceable:
        logger.warning("no sales to price from for %s: left out of the repricing after stock "
                       "changes", ", ".join(unpriceable))
    with db.service_database(settings) as engine:
        still = repriced(engine, {item: totals[item] for item in pending}, threshold)
    return RepricingReport(batch_id, priceable, unpriceable, still)
