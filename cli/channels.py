"""`tailor channels`: deliver approved prices to the sales channels (`serving.channels`) and
see where deliveries stand."""

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.keys import service_database
from cli.output import fail, out
from db import outbox
from db.channels import Destinations, load_destinations
from db.schemas import DELIVERY_STATUSES
from features.errors import InputError
from features.settings import get_settings
from serving.channels.worker import LEASE_SECONDS, DeliveryWorker

app = typer.Typer(help="Deliver approved prices to the sales channels.", no_args_is_help=True)

ConfigOption = Annotated[Path | None, typer.Option(
    "--config", help="Channels config YAML (see channels.example.yaml); default: "
                     "$TAILOR_CHANNELS_CONFIG")]


def _destinations(config: Path | None) -> Destinations:
    path = config or get_settings().channels_config
    if path is None:
        fail("no channels config: pass --config or set TAILOR_CHANNELS_CONFIG "
             "(see channels.example.yaml)")
    try:
        return load_destinations(path)
    except InputError as error:
        fail(str(error))


@app.command("push")
def push_command(
    config: ConfigOption = None,
    channel: Annotated[list[str] | None, typer.Option(
        help="Only this channel (repeatable); default: every configured channel")] = None,
    loop: Annotated[bool, typer.Option(
        "--loop", help="Keep delivering as approvals arrive, until stopped (Ctrl-C, SIGTERM)")]
    = False,
    lease_seconds: Annotated[float, typer.Option(
        min=1, help="How long a claim on a change lasts before another worker may take it "
                    "(a killed worker's changes wait this long)")] = LEASE_SECONDS,
) -> None:
    """Deliver the approved prices that are due, each channel in its own lane, and report.

    Without --loop it stops when no change is due (changes waiting for a retry stay queued).
    Several workers may run at once: each change is held by one of them at a time.
    """
    destinations = _destinations(config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stopping = threading.Event()
    if loop:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopping.set())
    with service_database() as engine:
        try:
            worker = DeliveryWorker(engine, destinations, lease_seconds=lease_seconds,
                                    channels=channel)
        except InputError as error:
            fail(str(error))
        for name, problem in worker.unavailable.items():
            out.print(f"[yellow]channel {name} cannot deliver:[/] {problem}")
        with worker:
            reports = worker.run(stopping.is_set, until_idle=not loop)
        counts = outbox.status_counts(engine)
    result = Table(title="Price deliveries (dead: refused or out of retries; waited: for rate "
                         "limits)")
    for column in ("channel", "delivered", "dead", "retrying", "given back", "calls",
                   "waited s", "pending"):
        result.add_column(column, justify="left" if column == "channel" else "right")
    for name in destinations.channels:
        pending = str(counts.get((name, "pending"), 0))
        if name not in reports:
            result.add_row(name, *["-"] * 6, pending)
            continue
        report = reports[name]
        result.add_row(name, str(report.delivered), str(report.failed), str(report.retrying),
                       str(report.released), str(report.calls),
                       f"{report.throttled_seconds:.1f}", pending)
    out.print(result)


@app.command("status")
def status_command() -> None:
    """Deliveries per channel and status."""
    with service_database() as engine:
        counts = outbox.status_counts(engine)
    result = Table(title="Price deliveries by channel")
    result.add_column("channel")
    for status in DELIVERY_STATUSES:
        result.add_column(status, justify="right")
    for name in sorted({channel for channel, _ in counts}):
        result.add_row(name, *(str(counts.get((name, status), 0))
                               for status in DELIVERY_STATUSES))
    out.print(result)
