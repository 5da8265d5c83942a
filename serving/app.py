"""The storefront's recommendations API and the merchandisers' price suggestions (FastAPI).

`create_app()` builds the app without loading anything (the OpenAPI contract can be
exported from it); its lifespan loads, once per worker, the Feast store, the `champion`
`recs-ranker` with its candidate state, the catalog and the item-feature cache, and opens
the service database (`Settings.database`) that holds the price suggestions. `run()`
serves it with uvicorn in factory mode, so every worker builds its own app.

The database is independent of the model: suggestions are listed with no recommender model
loaded, and recommendations keep answering while the database is down (the suggestion
endpoints answer 503 then, and create the tables once it is back).
"""

import logging
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated

import anyio
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import BeforeValidator
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from db import engine_for, migrate
from db.suggestions import count_suggestions, get_batch, list_suggestions
from features.settings import Settings, get_settings
from serving.config import ServingSettings
from serving.recommender import Recommender, ReloadError
from serving.schemas import (
    Health,
    NotReady,
    PriceSuggestion,
    PriceSuggestionPage,
    Problem,
    Readiness,
    Recommendations,
    RecommendedItem,
    ReloadResult,
    SuggestionBatch,
    SuggestionStatus,
)

logger = logging.getLogger(__name__)

API_VERSION = "1.0.0"
REQUEST_ID_HEADER = "X-Request-ID"
DESCRIPTION = """\
Recommendations for the storefront: a LightGBM ranker over candidate items, with a
popularity fallback whenever the ranker cannot answer (unknown user, missing features, no
model loaded). A well-formed recommendations request always gets 200.

Price suggestions for merchandisers: the optimizer's stored batches, read from the service
database (they need no recommender model; 503 while the database is unreachable).

Every response carries an `X-Request-ID` header; on recommendations it equals the body's
`request_id`.
"""


class RequestIdMiddleware:
    """Give every HTTP request a fresh uuid4 (`request.state.request_id`) and send it back
    as the `X-Request-ID` response header."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


class ServiceDatabase:
    """The service database of one worker: one engine (its connection pool), the suggestion
    tables created on first use (at startup, or on the first request after the database
    was unreachable then)."""

    def __init__(self, url: str):
        self.engine = engine_for(url)
        self._ready = False
        self._lock = threading.Lock()

    def ensure_schema(self) -> None:
        if self._ready:
            return
        with self._lock:
            if not self._ready:
                migrate(self.engine)
                self._ready = True

    def dispose(self) -> None:
        self.engine.dispose()


def database_unavailable(exc: DBAPIError) -> HTTPException:
    logger.error("the service database is unavailable: %s", exc)
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                         detail="the service database is unavailable; see the service log")


@contextmanager
def database_errors() -> Iterator[None]:
    """Answer 503 (not 500) when the database cannot be reached or queried."""
    try:
        yield
    except DBAPIError as exc:
        raise database_unavailable(exc) from exc


def get_recommender(request: Request) -> Recommender:
    return request.app.state.recommender


def get_database(request: Request) -> Engine:
    database: ServiceDatabase = request.app.state.database
    with database_errors():
        database.ensure_schema()
    return database.engine


def get_request_id(request: Request) -> str:
    return request.state.request_id


def excluded_items(
    exclude: Annotated[list[str] | None, Query(
        description="Item ids never to return: repeat the parameter "
                    "(`exclude=A&exclude=B`), separate ids with commas (`exclude=A,B`), "
                    "or both; empty values are ignored")] = None,
) -> frozenset[str]:
    return frozenset(item.strip() for value in exclude or () for item in value.split(",")
                     if item.strip())


def _blank_to_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
DatabaseDep = Annotated[Engine, Depends(get_database)]
RequestIdDep = Annotated[str, Depends(get_request_id)]
ExcludeDep = Annotated[frozenset[str], Depends(excluded_items)]

ops = APIRouter(tags=["ops"])
recommendations_router = APIRouter(prefix="/v1/users", tags=["recommendations"])
admin = APIRouter(prefix="/v1/admin", tags=["admin"])
prices = APIRouter(prefix="/v1/price-suggestions", tags=["price suggestions"],
                   responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": Problem}})
Filter = Annotated[str | None, BeforeValidator(_blank_to_none)]
"""An optional exact-match filter; an empty value is no filter."""


@ops.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    return Health()


@ops.get("/readyz", response_model=Readiness, summary="A model and the feature store are loaded",
         responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": NotReady}})
def readyz(recommender: RecommenderDep):
    state = recommender.status()
    if not state.ready:
        body = NotReady(reason=state.reason, model_version=state.model_version,
                        feature_store=state.feature_store)
        return JSONResponse(body.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return Readiness(model_version=state.model_version, feature_store=state.feature_store,
                     items=state.items, item_features_until=state.item_features_until)


@recommendations_router.get(
    "/{user_id}/recommendations", response_model=Recommendations,
    summary="The user's top k items",
    description="Personalised by the champion ranker when the user has history and "
                "features; otherwise the popularity fallback (`fallback: true`). `exclude` "
                "and `category` apply to both; only catalog items are returned.")
def recommendations(
    user_id: Annotated[str, Path(min_length=1, max_length=200)],
    recommender: RecommenderDep,
    request_id: RequestIdDep,
    exclude: ExcludeDep,
    k: Annotated[int, Query(ge=1, le=100, description="How many items")] = 10,
    category: Annotated[str | None, Query(
        description="Only items of this catalog category (exact); empty means any")] = None,
) -> Recommendations:
    result = recommender.recommend(user_id, k, category or None, exclude)
    return Recommendations(
        request_id=request_id, model_version=result.model_version, fallback=result.fallback,
        items=[RecommendedItem(item_id=item.item_id, score=item.score, source=item.source)
               for item in result.items],
    )


@admin.post("/reload", response_model=ReloadResult, summary="Serve the current champion",
            description="Re-reads the `champion` alias and swaps the model in once it is "
                        "fully loaded (this worker only); the previous one answers meanwhile "
                        "and keeps answering if loading fails (503).",
            responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": Problem}})
def reload(recommender: RecommenderDep) -> ReloadResult:
    try:
        previous, current = recommender.reload()
    except ReloadError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from exc
    return ReloadResult(previous_version=previous, current_version=current,
                        changed=previous != current)


@prices.get(
    "", response_model=PriceSuggestionPage, summary="Stored price suggestions, for review",
    description="Suggestions matching every filter given (empty filters are ignored), newest "
                "batch first, then by item and channel; `total` counts every match, "
                "`limit` and `offset` pick the page.")
def price_suggestions(
    database: DatabaseDep,
    review_status: Annotated[SuggestionStatus | None, BeforeValidator(_blank_to_none), Query(
        alias="status",
        description="Review status; empty means any status")] = "pending",
    channel: Annotated[Filter, Query(description="Only this sales channel")] = None,
    category: Annotated[Filter, Query(description="Only items of this catalog category")] = None,
    batch_id: Annotated[Filter, Query(description="Only this optimizer run")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size")] = 100,
    offset: Annotated[int, Query(ge=0, description="Matches to skip")] = 0,
) -> PriceSuggestionPage:
    filters = {"status": review_status, "channel": channel, "category": category,
               "batch_id": batch_id}
    with database_errors():
        rows = list_suggestions(database, **filters, limit=limit, offset=offset)
        total = count_suggestions(database, **filters)
    return PriceSuggestionPage(items=[PriceSuggestion.model_validate(row) for row in rows],
                               total=total, limit=limit, offset=offset)


@prices.get(
    "/batches/{batch_id}", response_model=SuggestionBatch, summary="One suggestion batch",
    description="An optimizer run: the demand model and guardrails it used, its suggestions "
                "per review status and the offers it could not price.",
    responses={status.HTTP_404_NOT_FOUND: {"model": Problem}})
def suggestion_batch(
    database: DatabaseDep,
    batch_id: Annotated[str, Path(min_length=1, description="The batch id")],
) -> SuggestionBatch:
    batch = None
    if batch_id.strip():
        with database_errors():
            batch = get_batch(database, batch_id)
    if batch is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            detail=f"no suggestion batch with id {batch_id!r}")
    return SuggestionBatch.model_validate(batch)


def create_app(settings: Settings | None = None,
               options: ServingSettings | None = None) -> FastAPI:
    """The API; models and stores load when it starts (lifespan), not here."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        config = settings or get_settings()
        if config.database_url is None:  # the embedded SQLite file lives in the data dir
            config.data_dir.mkdir(parents=True, exist_ok=True)
        database = ServiceDatabase(config.database)
        try:
            await anyio.to_thread.run_sync(database.ensure_schema)
        except DBAPIError as exc:  # recommendations do not need it: start anyway
            logger.error("the service database is unavailable at startup; price suggestions "
                         "answer 503 until it is back: %s", exc)
        app.state.database = database
        try:
            recommender = Recommender(config, options or ServingSettings())
            await anyio.to_thread.run_sync(recommender.load)
            app.state.recommender = recommender
            yield
        finally:
            database.dispose()

    app = FastAPI(title="tailor recommendations", version=API_VERSION, description=DESCRIPTION,
                  lifespan=lifespan)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(ops)
    app.include_router(recommendations_router)
    app.include_router(admin)
    app.include_router(prices)
    return app


def run(host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Serve with uvicorn; each worker builds its app (and loads its model) itself."""
    uvicorn.run("serving.app:create_app", factory=True, host=host, port=port, workers=workers)
