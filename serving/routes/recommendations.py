"""`GET /v1/users/{user_id}/recommendations`: the user's top k items, personalised or the
popularity fallback; a well-formed request always gets 200. Every response is recorded for
attribution (`serving.recs.served`: buffered in process, never waiting on the stream) and
counted in the metrics (fallback or not, the model version: `serving.observability`).

The route runs on the event loop, `Recommender.recommend` included: most answers come from
the result cache, a miss is about 3 ms of CPU with two bounded store reads, and the thread
pool bought nothing but contention (the loop thread waited for the GIL behind scoring
threads). Measured in docs/experiments.md (2026-12-05)."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from serving import observability
from serving.auth import AUTH_RESPONSES, as_storefront
from serving.deps import ExcludeQuery, excluded
from serving.recs import Recommender
from serving.recs.served import ServedRecorder
from serving.routes import reject_repeated
from serving.schemas import Recommendations, RecommendedItem

router = APIRouter(prefix="/v1/users", tags=["recommendations"],
                   dependencies=[Depends(as_storefront)],
                   responses=AUTH_RESPONSES)


@router.get(
    "/{user_id}/recommendations", response_model=Recommendations,
    summary="The user's top k items",
    description="Personalised by the champion ranker when the user has history and "
                "features; otherwise the popularity fallback (`fallback: true`). `exclude` "
                "and `category` apply to both; only catalog items are returned.")
async def recommendations(
    request: Request,
    user_id: Annotated[str, Path(min_length=1, max_length=200)],
    *,
    k: Annotated[int, Query(ge=1, le=100, description="How many items")] = 10,
    category: Annotated[str | None, Query(
        description="Only items of this catalog category (exact); empty means any")] = None,
    exclude: ExcludeQuery,
) -> Recommendations:
    # The worker's objects from the app state and the repeated-parameter check in the body,
    # not dependencies: each one FastAPI solves costs (see `serving.deps`).
    reject_repeated(request, "exclude")
    recommender: Recommender = request.app.state.recommender
    served: ServedRecorder = request.app.state.served
    request_id = request.state.request_id
    with observability.span("recommend"):
        result = recommender.recommend(user_id, k, category or None, excluded(exclude))
    served.record(request_id, user_id, result)
    observability.record_recommendation(result.fallback, result.model_version)
    return Recommendations(
        request_id=request_id, model_version=result.model_version, fallback=result.fallback,
        items=[RecommendedItem(item_id=item.item_id, score=item.score, source=item.source)
               for item in result.items],
    )
