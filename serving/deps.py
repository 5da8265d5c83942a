"""The service's dependencies and their `Annotated` aliases, for the routes.

- `RecommenderDep`: the worker's `Recommender` (loaded by the lifespan).
- `DatabaseDep`: the engine of the service database, upgraded to the newest migration on
  first use; 503 (not 500) while the database cannot be reached (`database_errors`).
- `DestinationsDep`: the channels config approvals are checked against (None when unset).
- `StreamDep`: the event stream events are appended to (`features.stream`).
- `ExcludeQuery` and `excluded`: the `exclude` query parameter, and the item ids it names.

Dependencies that do no I/O are `async`: FastAPI runs a plain `def` dependency in the thread
pool, a hop that costs more than the dependency itself. The recommendations route, the hot
path, takes the request instead of dependencies: each one FastAPI solves costs about 20 us.
"""

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, cast

from fastapi import Depends, HTTPException, Query, Request, status
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from db import engine_for, migrate
from db.channels import Destinations
from features.stream import EventStream
from serving.recs import Recommender

logger = logging.getLogger(__name__)


class ServiceDatabase:
    """The service database of one worker: one engine (its connection pool), migrated to the
    newest revision on first use (at startup, or on the first request after the database
    was unreachable then)."""

    def __init__(self, url: str):
        self.engine = engine_for(url)
        self._ready = False
        self._lock = threading.Lock()

    def ensure_schema(self) -> None:
        """Migrate once per worker (later calls return at once)."""
        if self._ready:
            return
        with self._lock:
            if not self._ready:
                migrate(self.engine)
                self._ready = True

    def dispose(self) -> None:
        self.engine.dispose()


@contextmanager
def database_errors() -> Iterator[None]:
    """Answer 503 (not 500) when the database cannot be reached or queried."""
    try:
        yield
    except DBAPIError as exc:
        logger.error("the service database is unavailable: %s", exc)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="the service database is unavailable; see the service log") from exc


async def get_recommender(request: Request) -> Recommender:
    return cast(Recommender, request.app.state.recommender)


def get_database(request: Request) -> Engine:
    database = cast(ServiceDatabase, request.app.state.database)
    with database_errors():
        database.ensure_schema()
    return database.engine


def get_destinations(request: Request) -> Destinations | None:
    return cast(Destinations | None, getattr(request.app.state, "destinations", None))


async def get_stream(request: Request) -> EventStream:
    return cast(EventStream, request.app.state.stream)


def _no_items() -> list[str]:
    """`exclude`'s default. Not `list`: pydantic inspects the factory's signature on every
    request, and a builtin's is parsed from text (57 us against 4)."""
    return []


ExcludeQuery = Annotated[list[str], Query(
    default_factory=_no_items,
    description="Item ids never to return: repeat the parameter "
                "(`exclude=A&exclude=B`), separate ids with commas (`exclude=A,B`), "
                "or both; empty values are ignored")]


def excluded(values: list[str]) -> frozenset[str]:
    """The item ids the `exclude` values name."""
    return frozenset(item.strip() for value in values for item in value.split(",")
                     if item.strip())


RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
DatabaseDep = Annotated[Engine, Depends(get_database)]
DestinationsDep = Annotated[Destinations | None, Depends(get_destinations)]
StreamDep = Annotated[EventStream, Depends(get_stream)]
