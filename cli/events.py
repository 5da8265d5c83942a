"""`tailor events`: the stream consumer that moves events from the stream into the event log
and the online features (`features.consumer`), records served recommendations and reprices
items whose stock moved (`training.pricing.stock`), and the stream's state."""

import gc
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.table import Table

from cli import inputs
from cli.inputs import ChannelPricesOption, ChannelsOption
from cli.output import fail, out
from features.changes import open_changes
from features.consumer import Consumer, RoundResult
from features.event_log import EventLog
from features.ingest import read_catalog
from features.online_updates import OnlineFeatureWriter
from features.served_log import served_handler
from features.settings import Settings, get_settings
from features.store import feature_store
from features.stream import SERVED, RedisStream, open_stream
from training.pricing.stock import RepricingInputs, handle_inventory, reprice_pending

app = typer.Typer(help="Move events from the stream into the log and the online features.",
                  no_args_is_help=True)
REPORT_SECONDS = 10.0


class Categories:
    """The catalog's item categories for the online writer, re-read when the catalog file
    changes (items added since the consumer started)."""

    def __init__(self, path: Path, writer: OnlineFeatureWriter):
        self.path = path
        self.writer = writer
        self._stamp: tuple[int, int] | None = None

    def refresh(self) -> None:
        stat = self.path.stat() if self.path.exists() else None
        stamp = (stat.st_mtime_ns, stat.st_size) if stat else None
        if stamp != self._stamp:
            self.writer.categories = read_catalog(self.path).set_index("item_id")["category"]
            self._stamp = stamp


class Repricer:
    """Reprices items whose stock moved, in a thread of its own: the consumer never waits
    on a suggestion run. Runs once at start (marks a stopped consumer left), then whenever
    `handle` marked items."""

    def __init__(self, settings: Settings, repricing: RepricingInputs, stopping: threading.Event):
        self.settings = settings
        self.repricing = repricing
        self.stopping = stopping
        self.due = threading.Event()
        self.due.set()
        self.thread = threading.Thread(target=self._run, name="repricer", daemon=True)

    def handle(self, events: pd.DataFrame) -> None:
        if handle_inventory(self.settings, events, self.repricing):
            self.due.set()

    def _run(self) -> None:
        while not self.stopping.is_set():
            if not self.due.wait(1.0):
                continue
            self.due.clear()
            report = reprice_pending(self.settings, self.repricing)
            if report.batch_id or report.error or report.unpriceable:
                logging.info("stock repricing: batch %s, repriced %s, cannot price %s, still "
                             "pending %s%s", report.batch_id, report.repriced,
                             report.unpriceable, report.pending,
                             f", error: {report.error}" if report.error else "")


def consumer(settings: Settings, claim_idle_seconds: float, entries_per_round: int,
             max_deliveries: int, repricer: Repricer | None = None) -> Consumer:
    """A consumer of the settings' stream writing their log, online store and served log;
    inventory events go to `repricer` when given."""
    writer = OnlineFeatureWriter(feature_store(settings), pd.Series(dtype=object))
    categories = Categories(settings.catalog_path, writer)
    categories.refresh()

    def after_events(events: pd.DataFrame) -> None:
        categories.refresh()
        if repricer is not None:
            repricer.handle(events)

    return Consumer(open_stream(settings, claim_idle_seconds), EventLog(settings.events_dir),
                    writer, handlers={SERVED: served_handler(settings)},
                    after_events=after_events, changes=open_changes(settings),
                    entries_per_round=entries_per_round,
                    max_deliveries=max_deliveries)


class Totals:
    """Counts over the rounds, logged every `REPORT_SECONDS`."""

    def __init__(self) -> None:
        self.events = self.written = self.dead = 0
        self._since = time.monotonic()
        self._last_events = 0

    def add(self, result: RoundResult) -> None:
        self.events += result.events
        self.written += result.written
        self.dead += result.dead_letters
        elapsed = time.monotonic() - self._since
        if elapsed >= REPORT_SECONDS:
            rate = (self.events - self._last_events) / elapsed
            logging.info("events: %d read, %d new, %d dead letters; %.0f events/s",
                         self.events, self.written, self.dead, rate)
            self._since, self._last_events = time.monotonic(), self.events


@app.command("consume")
def consume_command(
    until_idle: Annotated[bool, typer.Option(
        "--until-idle", help="Stop when the stream is empty instead of waiting for more")]
    = False,
    entries_per_round: Annotated[int, typer.Option(
        min=1, help="Stream entries (batches of events) written together")] = 50,
    claim_idle_seconds: Annotated[float, typer.Option(
        min=0.1, help="How long an entry another consumer read and did not acknowledge waits "
                      "before this one takes it over (a killed consumer's entries)")] = 30.0,
    max_deliveries: Annotated[int, typer.Option(
        min=1, help="Deliveries of a failing entry before its failing events become dead "
                    "letters")] = 5,
    channels: ChannelsOption = None,
    guardrails: Annotated[Path | None, typer.Option(
        rich_help_panel=inputs.INPUTS,
        help="Guardrails YAML of the stock repricing runs (its reprice_on_stock sets when a "
             "stock change reprices); default: the defaults of guardrails.example.yaml")]
    = None,
    channel_prices: ChannelPricesOption = None,
) -> None:
    """Consume the event stream until stopped (Ctrl-C, SIGTERM): each batch is appended to
    the event log and applied to the online features, then acknowledged.

    Served recommendations go to the served log (`tailor report recs`). Stock reports
    (`inventory` events) that move an item's stock past the guardrails' threshold start a
    targeted price suggestion run for it, in the background, through the approval policy
    ($TAILOR_APPROVAL_POLICY) and the delivery outbox; that needs the channel fees
    (--channels, or channels.csv beside the event log), else stock is only logged.
    Several consumers may run at once; they share the stream's entries.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = get_settings()
    stopping = threading.Event()
    fees = channels or settings.events_dir.parent / inputs.CHANNELS_NAME
    repricer = None
    if fees.is_file():
        if guardrails is not None and not guardrails.is_file():
            fail(f"--guardrails {guardrails}: file not found")
        repricer = Repricer(settings, RepricingInputs(
            settings.events_dir, settings.catalog_path, fees, guardrails, channel_prices),
            stopping)
    elif channels is not None:
        fail(f"--channels {channels}: file not found")
    else:
        logging.warning("no channel fees (--channels, or %s): stock reports are logged but "
                        "do not reprice", fees)
    worker = consumer(settings, claim_idle_seconds, entries_per_round, max_deliveries,
                      repricer)
    if isinstance(worker.stream, RedisStream) and not worker.stream.persistent():
        logging.warning("Redis runs without its append-only file: accepted events that are "
                        "not consumed yet are lost if Redis stops (set appendonly yes)")
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    gc.freeze()  # what is loaded stays: full collections need not scan it every round
    if repricer is not None:
        repricer.thread.start()
    totals = Totals()

    def after_round(result: RoundResult) -> None:
        totals.add(result)
        if until_idle and result.entries == 0:
            stopping.set()

    try:
        worker.run(stopping, block_seconds=0.2 if until_idle else 1.0, on_round=after_round)
    finally:
        worker.stream.close()
    out.print(f"events read: {totals.events}, new: {totals.written}, dead letters: "
              f"{totals.dead}")


@app.command("status")
def status_command(
    limit: Annotated[int, typer.Option(min=1, help="Dead letters to list")] = 20,
) -> None:
    """Entries waiting in the stream, and the dead letters with their reasons."""
    stream = open_stream(get_settings())
    try:
        out.print(f"entries waiting in the stream: {stream.backlog()}")
        dead = stream.dead_letters(limit)
    finally:
        stream.close()
    result = Table(title=f"Dead letters (first {limit})")
    for column in ("entry", "kind", "records", "reason"):
        result.add_column(column)
    for letter in dead:
        result.add_row(letter.entry_id, letter.kind, str(len(letter.records)), letter.reason)
    out.print(result)
