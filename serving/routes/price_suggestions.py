"""`/v1/price-suggestions`: the optimizer's stored batches for review, read from the service
database (`db.suggestions`); 503 while it is unreachable, whatever the recommender's state."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status
from pydantic import BeforeValidator

from db.suggestions import count_suggestions, get_batch, list_suggestions
from serving.deps import DatabaseDep, database_errors
from serving.schemas import (
    PriceSuggestion,
    PriceSuggestionPage,
    Problem,
    SuggestionBatch,
    SuggestionStatus,
)

router = APIRouter(prefix="/v1/price-suggestions", tags=["price suggestions"],
                   responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": Problem}})


def _blank_to_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


Filter = Annotated[str | None, BeforeValidator(_blank_to_none)]
"""An optional exact-match filter; an empty value is no filter."""


@router.get(
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


@router.get(
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
