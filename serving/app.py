"""The storefront's recommendations API (FastAPI).

`create_app()` builds the app without loading anything (the OpenAPI contract can be
exported from it); its lifespan loads, once per worker, the Feast store, the `champion`
`recs-ranker` with its candidate state, the catalog and the item-feature cache. `run()`
serves it with uvicorn in factory mode, so every worker builds its own app.
"""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import anyio
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, status
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from features.settings import Settings, get_settings
from serving.config import ServingSettings
from serving.recommender import Recommender, ReloadError
from serving.schemas import (
    Health,
    NotReady,
    Problem,
    Readiness,
    Recommendations,
    RecommendedItem,
    ReloadResult,
)

API_VERSION = "1.0.0"
REQUEST_ID_HEADER = "X-Request-ID"
DESCRIPTION = """\
Recommendations for the storefront: a LightGBM ranker over candidate items, with a
popularity fallback whenever the ranker cannot answer (unknown user, missing features, no
model loaded). A well-formed request always gets 200.

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


def get_recommender(request: Request) -> Recommender:
    return request.app.state.recommender


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


RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
RequestIdDep = Annotated[str, Depends(get_request_id)]
ExcludeDep = Annotated[frozenset[str], Depends(excluded_items)]

ops = APIRouter(tags=["ops"])
recommendations_router = APIRouter(prefix="/v1/users", tags=["recommendations"])
admin = APIRouter(prefix="/v1/admin", tags=["admin"])


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
                     items=state.items)


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


def create_app(settings: Settings | None = None,
               options: ServingSettings | None = None) -> FastAPI:
    """The API; models and stores load when it starts (lifespan), not here."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        recommender = Recommender(settings or get_settings(), options or ServingSettings())
        await anyio.to_thread.run_sync(recommender.load)
        app.state.recommender = recommender
        yield

    app = FastAPI(title="tailor recommendations", version=API_VERSION, description=DESCRIPTION,
                  lifespan=lifespan)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(ops)
    app.include_router(recommendations_router)
    app.include_router(admin)
    return app


def run(host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Serve with uvicorn; each worker builds its app (and loads its model) itself."""
    uvicorn.run("serving.app:create_app", factory=True, host=host, port=port, workers=workers)
