"""Operations: liveness (`/healthz`), readiness (`/readyz`: 503 with the reason until a model
and the feature store are loaded), Prometheus metrics (`/metrics`, open like the probes and
kept out of the OpenAPI schema) and `POST /v1/admin/reload` (serve the current champion; 503
and the previous model keeps serving when loading fails)."""

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse

from features.settings import get_settings
from features.store import online_store_kind
from serving import observability
from serving.auth import AUTH_RESPONSES, as_admin
from serving.deps import RecommenderDep
from serving.recs import Recommender, ReloadError
from serving.schemas import (
    FeatureStoreKind,
    Health,
    NotReady,
    Problem,
    Readiness,
    ReloadResult,
)

router = APIRouter(tags=["ops"])
admin = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(as_admin)],
                  responses=AUTH_RESPONSES)
LOADING = "loading: the recommender is not loaded yet"


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    return Health()


@router.get("/readyz", response_model=Readiness,
            summary="A model and the feature store are loaded",
            responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": NotReady}})
def readyz(request: Request) -> Readiness | JSONResponse:
    recommender: Recommender | None = getattr(request.app.state, "recommender", None)
    if recommender is None:  # the lifespan sets it once loaded
        kind: FeatureStoreKind = online_store_kind(get_settings())
        return not_ready(NotReady(reason=LOADING, model_version=None, feature_store=kind))
    state = recommender.status()
    if state.reason is not None or state.model_version is None:
        return not_ready(NotReady(reason=state.reason or "no model is loaded",
                                  model_version=state.model_version,
                                  feature_store=state.feature_store))
    return Readiness(model_version=state.model_version, feature_store=state.feature_store,
                     items=state.items, item_features_until=state.item_features_until)


def not_ready(body: NotReady) -> JSONResponse:
    return JSONResponse(body.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus metrics (`serving.observability`), of every worker in multiprocess mode;
    404 when they are off (`TAILOR_SERVING_METRICS=false`)."""
    if not observability.metrics_enabled():
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="metrics are off in this worker "
                                                              "(TAILOR_SERVING_METRICS=false)")
    body, content_type = observability.exposition(request.headers.get("accept"))
    return Response(body, media_type=content_type)


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
    observability.record_model_version(current)
    return ReloadResult(previous_version=previous, current_version=current,
                        changed=previous != current)
