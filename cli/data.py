"""`tailor data`: load events and catalogs into the data directory, or simulate a market."""

from pathlib import Path
from typing import Annotated

import typer

from cli.inputs import ExistingFile
from cli.output import fail, out, table
from features.errors import InputError
from features.ingest import (
    import_events_file,
    import_online_retail,
    read_table_file,
    upsert_catalog,
)
from features.settings import get_settings
from features.simulator import DemandFamily, simulate_to_dir

app = typer.Typer(help="Load events and catalogs into the data directory, or simulate a "
                       "market.", no_args_is_help=True)


@app.command("import-online-retail")
def import_online_retail_command(
    path: ExistingFile,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Data directory; default: TAILOR_DATA_DIR")] = None,
) -> None:
    """Import the UCI Online Retail export (CSV or CSV.GZ) as events and a catalog."""
    data_dir = out_dir.resolve() if out_dir else get_settings().data_dir
    try:
        result = import_online_retail(path, data_dir)
    except InputError as error:
        fail(str(error))
    report = result.report
    rows: dict[str, object] = {"rows read": report.rows_read}
    rows |= {f"events: {kind}": n for kind, n in sorted(report.events_by_type.items())}
    rows |= {f"rejected: {reason}": n for reason, n in sorted(report.rejected.items())}
    rows |= {"written to the log": result.appended.written,
             "already in the log": result.appended.duplicates,
             "catalog items": result.catalog_items, "data directory": data_dir}
    out.print(table("Online Retail import", rows))


@app.command("import-events")
def import_events_command(path: ExistingFile) -> None:
    """Append a CSV or Parquet file of canonical events to the event log (idempotent)."""
    try:
        result = import_events_file(path, get_settings().events_dir)
    except InputError as error:
        fail(str(error))
    out.print(table("Event import", {"written": result.written,
                                     "already in the log": result.duplicates,
                                     "partition files": result.files}))


@app.command("import-catalog")
def import_catalog_command(path: ExistingFile) -> None:
    """Merge a CSV or Parquet file of canonical catalog items into the catalog."""
    try:
        count = upsert_catalog(get_settings().catalog_path, read_table_file(path))
    except InputError as error:
        fail(str(error))
    out.print(table("Catalog import", {"items written": count}))


@app.command("simulate")
def simulate_command(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the market to")],
    days: Annotated[int, typer.Option(min=1)] = 365,
    users: Annotated[int, typer.Option(min=1)] = 2000,
    items: Annotated[int, typer.Option(min=1)] = 200,
    seed: Annotated[int, typer.Option(min=0)] = 1,
    family: Annotated[DemandFamily, typer.Option(
        help="Shape of the hidden demand curves; see docs/simulator.md")] = "exponential",
) -> None:
    """Simulate a pattern shop on three channels with hidden demand curves (seeded)."""
    counts = simulate_to_dir(days, users, items, seed, out_dir.resolve(), family=family)
    out.print(table(f"Simulated market in {out_dir}", {"demand family": family, **counts}))
