"""`tailor features`: build, register and materialize the recommender's features (Feast).

Each command checks that the one before it ran (`build` -> `apply` -> `materialize` ->
`online`) and says which to run when it did not.
"""

from datetime import UTC, datetime
from typing import Annotated

import typer
from feast import FeatureStore
from rich.table import Table

from cli.inputs import event_log, utc_datetime
from cli.output import fail, out, table
from features.consumer import online_writes
from features.feature_repo.definitions import RECS_RANKER_SERVICE
from features.ingest import read_catalog
from features.settings import Settings, get_settings
from features.store import (
    apply_definitions,
    feature_store,
    materialize,
    online_features,
    online_store_kind,
)
from features.transforms import build_feature_tables

app = typer.Typer(help="Build, register and materialize the recommender's features (Feast).",
                  no_args_is_help=True)


def require_built(settings: Settings) -> None:
    """Exit 2 unless `tailor features build` wrote the feature tables."""
    if not any(settings.feature_tables_dir.glob("*.parquet")):
        fail(f"no feature tables in {settings.feature_tables_dir}: run `tailor features build` "
             "first")


def require_applied(settings: Settings, store: FeatureStore) -> None:
    """Exit 2 unless `tailor features apply` registered the feature definitions."""
    if RECS_RANKER_SERVICE not in {service.name for service in store.list_feature_services()}:
        fail(f"the Feast registry of {settings.data_dir} holds no feature definitions "
             f"({RECS_RANKER_SERVICE}): run `tailor features apply` first")


def require_materialized(store: FeatureStore) -> None:
    """Exit 2 unless `tailor features materialize` loaded values into the online store."""
    if not any(view.materialization_intervals for view in store.list_feature_views()):
        fail("the online store holds no feature values yet: run `tailor features materialize` "
             "first")


@app.command("build")
def build_command() -> None:
    """Compute the feature tables (the Feast offline sources) from the event log."""
    settings = get_settings()
    log = event_log(None)
    catalog = read_catalog(settings.catalog_path)
    counts = build_feature_tables(log.path, catalog, settings.feature_tables_dir)
    out.print(table("Feature tables (rows)", counts))


@app.command("apply")
def apply_command() -> None:
    """Register entities, sources, feature views and feature services with Feast."""
    settings = get_settings()
    require_built(settings)
    names = apply_definitions(feature_store(settings))
    out.print(f"applied {len(names)} Feast objects: {', '.join(names)}")


@app.command("materialize")
def materialize_command(
    end: Annotated[datetime | None, typer.Option(help="Load values up to this time (UTC)")] = None,
) -> None:
    """Load the latest feature values into the online store (SQLite, or Redis if set)."""
    settings = get_settings()
    store = feature_store(settings)
    require_applied(settings, store)
    with online_writes(settings.events_dir):  # not between a consumer's read and write
        until = materialize(store, utc_datetime(end))
    backend = online_store_kind(settings).replace("_", " ")
    out.print(f"materialized features up to {until.isoformat()} into the {backend} online store")


@app.command("online")
def online_command(
    user_id: str,
    item_ids: Annotated[list[str], typer.Argument(help="Item ids to read against the user")],
    as_of: Annotated[datetime | None, typer.Option(help="Feature time (UTC); default now")] = None,
) -> None:
    """Read the recommender's online features of a user against some items."""
    settings = get_settings()
    store = feature_store(settings)
    require_applied(settings, store)
    require_materialized(store)
    values = online_features(store, user_id, item_ids, utc_datetime(as_of) or datetime.now(UTC))
    shown = Table(title=f"Online features of user {user_id}")
    shown.add_column("feature")
    for item in item_ids:
        shown.add_column(f"item {item}")
    for name, column in values.items():
        shown.add_row(name, *(str(round(v, 4)) if isinstance(v, float) else str(v) for v in column))
    out.print(shown)
