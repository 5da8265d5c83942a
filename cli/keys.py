"""`tailor keys`: the service's API keys (`db.keys`). A new key is printed once, alone on
stdout, so scripts can capture it (`KEY=$(tailor keys create --role storefront)`); what it is
goes to stderr."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

import db
from cli.output import fail, out
from db.keys import create_demo_keys, create_key, list_keys, revoke_key
from db.schemas import ROLES
from features.settings import get_settings

app = typer.Typer(help="Create, list and revoke the API keys of the service.",
                  no_args_is_help=True)
notes = Console(stderr=True)


@contextmanager
def service_database() -> Iterator[Engine]:
    """The service database, migrated to the newest revision (exit 2 when unreachable)."""
    settings = get_settings()
    try:
        with db.service_database(settings) as engine:
            yield engine
    except DBAPIError as error:
        fail(f"the service database is unavailable ({settings.database}): {error.orig}")


@app.command("create")
def create_command(
    role: Annotated[str, typer.Option(help=f"One of {', '.join(ROLES)}")],
    name: Annotated[str | None, typer.Option(
        help="A unique name, shown in the audit log (default: <role>-<6 hex>)")] = None,
) -> None:
    """Create a key and print it once on stdout (only its hash is stored)."""
    with service_database() as engine:
        try:
            key, stored = create_key(engine, role, name)
        except ValueError as error:
            fail(str(error))
    notes.print(f"created key '{stored.name}' with the role '{stored.role}'; it is shown "
                "once, keep it", highlight=False)
    sys.stdout.write(key + "\n")


@app.command("list")
def list_command() -> None:
    """List the keys (names, roles, prefixes; never the keys)."""
    with service_database() as engine:
        keys = list_keys(engine)
    table = Table(title=f"{len(keys)} API key(s)")
    for column in ("name", "role", "prefix", "created", "revoked"):
        table.add_column(column)
    for key in keys:
        table.add_row(key.name, key.role, key.key_prefix + "...",
                      f"{key.created_at:%Y-%m-%d %H:%M}",
                      f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "")
    out.print(table)


@app.command("revoke")
def revoke_command(name: Annotated[str, typer.Argument(help="The key's name")]) -> None:
    """Revoke a key: the service refuses it from then on (within 30 s in running workers)."""
    with service_database() as engine:
        try:
            key = revoke_key(engine, name)
        except LookupError as error:
            fail(str(error))
    notes.print(f"revoked key '{key.name}' ({key.role})", highlight=False)


@app.command("demo")
def demo_command() -> None:
    """On a database without keys, create a merchandiser and a storefront key for the demo
    and print them; otherwise say how to list or create keys."""
    with service_database() as engine:
        created = create_demo_keys(engine)
    if not created:
        notes.print("API keys exist already: `tailor keys list` shows them, `tailor keys "
                    "create --role storefront` makes another", highlight=False)
        return
    notes.print("Demo API keys (shown once; only their hashes are stored):", highlight=False)
    for name, key in created.items():
        out.print(f"  {name}: {key}", highlight=False, soft_wrap=True)
