"""`tailor`: one command line, a command group per pipeline stage."""

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from features.event_log import EventLog
from features.ingest import (
    import_events_file,
    import_online_retail,
    read_catalog,
    read_table_file,
    upsert_catalog,
)
from features.progress import stages
from features.schemas import InvalidRecordsError
from features.settings import get_settings
from features.simulator import simulate_to_dir
from features.store import apply_definitions, feature_store, materialize, online_features
from features.transforms import build_feature_tables
from training.pricing.evaluate import evaluate_pricing
from training.pricing.evaluate_demand import evaluate_demand
from training.pricing.market import load_market_files
from training.pricing.suggest import run_suggest
from training.pricing.train import train_pricing
from training.recs.evaluate import evaluate_recs
from training.recs.train import train_recs

app = typer.Typer(help="tailor: recommendations and price suggestions for pattern shops.",
                  no_args_is_help=True)
data_app = typer.Typer(help="Load events and catalogs into the event log.", no_args_is_help=True)
features_app = typer.Typer(help="Build, register and materialize features (Feast).",
                           no_args_is_help=True)
app.add_typer(data_app, name="data")
evaluate_app = typer.Typer(help="Offline evaluation against baselines on a time split.",
                           no_args_is_help=True)
train_app = typer.Typer(help="Train models, track them in MLflow, promote champions.",
                        no_args_is_help=True)
app.add_typer(features_app, name="features")
app.add_typer(train_app, name="train")
pricing_app = typer.Typer(help="Price suggestions for merchandisers.", no_args_is_help=True)
app.add_typer(pricing_app, name="pricing")
app.add_typer(evaluate_app, name="evaluate")
out = Console()


def _fail(message: str) -> None:
    Console(stderr=True).print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


def _table(title: str, rows: dict[str, object]) -> Table:
    table = Table(title=title, show_header=False)
    for key, value in rows.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    return table


def _print_promotion(promoted: bool, reason: str) -> None:
    out.print(f"{'promoted to champion' if promoted else 'not promoted'}: {reason}")


ExistingFile = Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)]
EventsDir = Annotated[Path, typer.Option("--events", exists=True, file_okay=False,
                                         help="Event log directory")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object")]


@data_app.command("import-online-retail")
def import_online_retail_command(
    path: ExistingFile,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Data directory")] = None,
) -> None:
    """Import the UCI Online Retail export (CSV or CSV.GZ) as events and a catalog."""
    data_dir = out_dir.resolve() if out_dir else get_settings().data_dir
    try:
        result = import_online_retail(path, data_dir)
    except (InvalidRecordsError, ValueError) as error:
        _fail(str(error))
    report = result.report
    rows: dict[str, object] = {"rows read": report.rows_read}
    rows |= {f"events: {kind}": n for kind, n in sorted(report.events_by_type.items())}
    rows |= {f"rejected: {reason}": n for reason, n in sorted(report.rejected.items())}
    rows |= {"written to the log": result.appended.written,
             "already in the log": result.appended.duplicates,
             "catalog items": result.catalog_items, "data directory": data_dir}
    out.print(_table("Online Retail import", rows))


@data_app.command("import-events")
def import_events_command(path: ExistingFile) -> None:
    """Append a CSV or Parquet file of canonical events to the event log (idempotent)."""
    try:
        result = import_events_file(path, get_settings().events_dir)
    except (InvalidRecordsError, ValueError) as error:
        _fail(str(error))
    out.print(_table("Event import", {"written": result.written,
                                      "already in the log": result.duplicates,
                                      "partition files": result.files}))


@data_app.command("import-catalog")
def import_catalog_command(path: ExistingFile) -> None:
    """Merge a CSV or Parquet file of canonical catalog items into the catalog."""
    try:
        count = upsert_catalog(get_settings().catalog_path, read_table_file(path))
    except (InvalidRecordsError, ValueError) as error:
        _fail(str(error))
    out.print(_table("Catalog import", {"items written": count}))


@data_app.command("simulate")
def simulate_command(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the market to")],
    days: Annotated[int, typer.Option(min=1)] = 365,
    users: Annotated[int, typer.Option(min=1)] = 2000,
    items: Annotated[int, typer.Option(min=1)] = 200,
    seed: Annotated[int, typer.Option(min=0)] = 1,
) -> None:
    """Simulate a pattern shop on three channels with hidden demand curves (seeded)."""
    counts = simulate_to_dir(days, users, items, seed, out_dir.resolve())
    out.print(_table(f"Simulated market in {out_dir}", counts))


@features_app.command("build")
def build_command() -> None:
    """Compute the feature tables (the Feast offline sources) from the event log."""
    settings = get_settings()
    catalog = read_catalog(settings.catalog_path)
    counts = build_feature_tables(settings.events_dir, catalog, settings.feature_tables_dir)
    out.print(_table("Feature tables (rows)", counts))


@features_app.command("apply")
def apply_command() -> None:
    """Register entities, sources, feature views and feature services with Feast."""
    names = apply_definitions(feature_store(get_settings()))
    out.print(f"applied {len(names)} Feast objects: {', '.join(names)}")


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@features_app.command("materialize")
def materialize_command(
    end: Annotated[datetime | None, typer.Option(help="Load values up to this time (UTC)")] = None,
) -> None:
    """Load the latest feature values into the online store (SQLite, or Redis if set)."""
    settings = get_settings()
    store = feature_store(settings)
    until = materialize(store, _utc(end))
    backend = "redis" if settings.redis_url else "sqlite"
    out.print(f"materialized features up to {until.isoformat()} into the {backend} online store")


@features_app.command("online")
def online_command(
    user_id: str,
    item_ids: Annotated[list[str], typer.Argument(help="Item ids to read against the user")],
    as_of: Annotated[datetime | None, typer.Option(help="Feature time (UTC); default now")] = None,
) -> None:
    """Read the recommender's online features for a user and some items."""
    values = online_features(feature_store(get_settings()), user_id, item_ids,
                             _utc(as_of) or datetime.now(UTC))
    table = Table(title=f"Online features of user {user_id}")
    table.add_column("feature")
    for item in item_ids:
        table.add_column(f"item {item}")
    for name, column in values.items():
        table.add_row(name, *(str(round(v, 4)) if isinstance(v, float) else str(v) for v in column))
    out.print(table)


RECS_COLUMNS = ("ndcg@10", "recall@20", "hr@10", "coverage", "novel_ndcg@10", "novel_recall@20")


def _metrics_table(title: str, rows: dict[str, dict], columns: tuple[str, ...]) -> Table:
    """One row per method (name -> its metrics), four decimals."""
    table = Table(title=title)
    table.add_column("method")
    for column in columns:
        table.add_column(column, justify="right")
    for name, metrics in rows.items():
        table.add_row(name, *(f"{metrics[c]:.4f}" for c in columns))
    return table


@evaluate_app.command("recs")
def evaluate_recs_command(
    events_dir: EventsDir,
    split_date: Annotated[datetime, typer.Option(help="First day scored (UTC)")],
    until: Annotated[datetime | None, typer.Option(help="End of scoring; default split + 30 d")]
    = None,
    catalog_path: Annotated[Path | None, typer.Option(
        "--catalog", help="Catalog file; default: catalog.parquet beside the event log")] = None,
    cutoffs: Annotated[int, typer.Option(min=2, help="Monthly training cutoffs")] = 3,
    extra_seeds: Annotated[list[int] | None, typer.Option(
        "--extra-seed", help="Also refit the ranker with this seed (repeatable): seed noise")]
    = None,
    as_json: JsonFlag = False,
) -> None:
    """Fit everything before the split; compare the ranker with baselines after it."""
    split = pd.Timestamp(_utc(split_date))
    end = pd.Timestamp(_utc(until)) if until else split + pd.Timedelta(days=30)
    catalog = read_catalog(catalog_path or events_dir.parent / "catalog.parquet")
    with stages(["reading events", "building features", "training the ranker",
                 "scoring candidates", "scoring baselines"]) as done:
        events = EventLog(events_dir).read(end=end)
        done()
        result = evaluate_recs(events, catalog, split, end, cutoffs,
                               tuple(extra_seeds or ()), step=done)
    if as_json:
        print(json.dumps(result))
        return
    out.print(_metrics_table(f"Recommendations, {result['split']} to {result['until']} "
                             f"({result['rows'][0]['users']} users)",
                             {row["name"]: row for row in result["rows"]}, RECS_COLUMNS))
    out.print(f"candidate recall {result['candidate_recall']:.3f} with "
              f"{result['candidates_per_user']:.0f} candidates per user")
    if extra_seeds:
        out.print("ranker NDCG@10 by seed: " + ", ".join(
            f"{run['seed']}: {run['ndcg@10']:.4f}" for run in result["seed_runs"]))


@train_app.command("recs")
def train_recs_command(
    cutoffs: Annotated[int, typer.Option(min=2, help="Monthly training cutoffs")] = 3,
) -> None:
    """Train the ranker on the event log, log it to MLflow, promote it if it beats the
    champion on the same validation month. Needs `tailor features build` and `apply`."""
    with stages(["training and validating"]) as done:
        report = train_recs(get_settings(), cutoffs=cutoffs)
        done()
    out.print(_metrics_table(f"recs-ranker version {report.version} (run {report.run_id[:8]})",
                             report.metrics, RECS_COLUMNS[:4]))
    _print_promotion(report.promoted, report.reason)


@evaluate_app.command("demand")
def evaluate_demand_command(
    events_dir: EventsDir,
    split_date: Annotated[datetime, typer.Option(help="First period scored (UTC)")],
    until: Annotated[datetime | None, typer.Option(help="End of scoring; default: log end")]
    = None,
    period: Annotated[str, typer.Option(help="W (weeks from Monday) or D (days)")] = "W",
    as_json: JsonFlag = False,
) -> None:
    """Weekly (or daily) units per item x channel after the split: the demand model against
    last-period and 4-period-mean forecasts (WAPE, MAE)."""
    if period not in ("W", "D"):
        _fail(f"--period must be W or D, got {period!r}")
    with stages(["reading events", "training and scoring"]) as done:
        events = EventLog(events_dir).read()
        done()
        result = evaluate_demand(events, pd.Timestamp(_utc(split_date)), period=period,
                                 until=pd.Timestamp(_utc(until)) if until else None)
        done()
    rows = [{"name": r["name"], "wape": r["wape"], "mae": r["mae"]} for r in result["rows"]]
    if as_json:
        print(json.dumps({"rows": rows, "counts": result["counts"]}))
        return
    table = Table(title=f"Demand per item x channel x {'week' if period == 'W' else 'day'} "
                        f"from {split_date:%Y-%m-%d}")
    for column in ("method", "WAPE", "MAE"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows:
        table.add_row(row["name"], f"{row['wape']:.4f}", f"{row['mae']:.3f}")
    out.print(table)


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(min=1)] = 1,
    clock: Annotated[str | None, typer.Option(
        help="as_of of recency features: now, model (the champion's cutoff; for replayed "
             "data such as the demo) or an ISO time; default TAILOR_SERVING_CLOCK or now")]
    = None,
) -> None:
    """Serve the recommendations API (FastAPI, uvicorn) with the champion model."""
    from serving.app import run

    if clock:
        os.environ["TAILOR_SERVING_CLOCK"] = clock  # read by every worker at start-up
    run(host=host, port=port, workers=workers)


EventsOption = Annotated[Path | None, typer.Option("--events", help="Event log directory; "
                                                    "default: the data directory's")]
CatalogOption = Annotated[Path | None, typer.Option("--catalog", help="Catalog (CSV or "
                                                     "Parquet); default: the data directory's")]
ChannelsOption = Annotated[Path | None, typer.Option("--channels", help="Channel fees CSV "
                                                      "(channel, fee_percent, fee_fixed); "
                                                      "default: channels.csv in the data dir")]
PeriodOption = Annotated[str, typer.Option(help="Demand per W (week) or D (day)")]


def _market_paths(events: Path | None, catalog: Path | None, channels: Path | None):
    settings = get_settings()
    return (events or settings.events_dir, catalog or settings.catalog_path,
            channels or settings.data_dir / "channels.csv")


@train_app.command("pricing")
def train_pricing_command(events: EventsOption = None, catalog: CatalogOption = None,
                          channels: ChannelsOption = None, period: PeriodOption = "W") -> None:
    """Train the demand model, log it to MLflow as `demand-model`, promote it if its
    validation WAPE beats the champion's on the same weeks."""
    try:
        market = load_market_files(*_market_paths(events, catalog, channels))
    except (OSError, ValueError) as error:
        _fail(str(error))
    with stages(["training and validating"]) as done:
        report = train_pricing(get_settings(), *market, period=period)
        done()
    table = Table(title=f"{report.model_version} (run {report.run_id[:8]})")
    for column in ("method", "WAPE", "MAE"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, values in report.metrics.items():
        table.add_row(name, f"{values['wape']:.4f}", f"{values['mae']:.3f}")
    out.print(table)
    _print_promotion(report.promoted, report.reason)


SUGGESTION_FIELDS = ("item_id", "channel", "current_price", "suggested_price",
                     "expected_profit_current", "expected_profit_suggested", "bound_by",
                     "explanation")


@pricing_app.command("suggest")
def suggest_command(
    events: EventsOption = None, catalog: CatalogOption = None, channels: ChannelsOption = None,
    guardrails: Annotated[Path | None, typer.Option(help="Guardrails YAML; default: the "
                                                         "defaults of guardrails.example.yaml")]
    = None,
    period: PeriodOption = "W",
    as_json: JsonFlag = False,
) -> None:
    """Train, suggest a price per item x channel under the guardrails and store the batch
    as pending for review."""
    try:
        with stages(["training, suggesting and storing"]) as done:
            batch_id, result = run_suggest(get_settings(), *_market_paths(events, catalog,
                                                                          channels),
                                           guardrails, period)
            done()
    except (OSError, ValueError) as error:
        _fail(str(error))
    suggested = result.suggestions[list(SUGGESTION_FIELDS)]
    if as_json:
        print(json.dumps({"batch_id": batch_id,
                          "suggestions": json.loads(suggested.to_json(orient="records")),
                          "skipped": json.loads(result.skipped.to_json(orient="records"))}))
        return
    moved = suggested[suggested["suggested_price"] != suggested["current_price"]]
    gain = (suggested["expected_profit_suggested"] - suggested["expected_profit_current"]).sum()
    out.print(_table(f"Price suggestions, batch {batch_id}", {
        "suggestions": len(suggested), "price changes": len(moved),
        "skipped": len(result.skipped),
        "expected profit change per period": f"{gain:+,.2f}"}))


@evaluate_app.command("pricing")
def evaluate_pricing_command(
    sim: Annotated[Path, typer.Option("--sim", exists=True, file_okay=False,
                                      help="A market written by `tailor data simulate`")],
    period: PeriodOption = "W",
    as_json: JsonFlag = False,
) -> None:
    """Train on a simulated market, suggest, and score against its hidden truth: profit as
    a fraction of the oracle's (the true optimum under the same guardrails)."""
    with stages(["training, suggesting and scoring"]) as done:
        result = evaluate_pricing(sim, period=period)
        done()
    keys = ("oracle_fraction", "keep_current_fraction", "naive_argmax_fraction", "violations",
            "suggestions", "skipped")
    summary = {key: result[key] for key in keys}
    if as_json:
        print(json.dumps(summary))
        return
    out.print(_table(f"Pricing against the simulator's truth ({sim})", {
        key: f"{value:.4f}" if isinstance(value, float) else value
        for key, value in summary.items()}))
