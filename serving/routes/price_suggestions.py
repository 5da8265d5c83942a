"""`/v1/price-suggestions`: the optimizer's stored batches for review, and the review itself
(`db.reviews`): approve, reject, edit, in bulk; `/v1/price-decisions`: the audit log. Every
route needs a merchandiser key (`serving.auth`); 503 while the database is unreachable,
whatever the recommender's state."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BeforeValidator

from db.reviews import (
    DecisionConflict,
    GuardrailBreach,
    SuggestionNotFound,
    TooManyForBulk,
    count_decisions,
    decide,
    decide_many,
    get_suggestion,
    list_decisions,
)
from db.suggestions import count_suggestions, get_batch, list_suggestions
from serving.auth import AUTH_RESPONSES, MerchandiserKey, as_merchandiser
from serving.deps import DatabaseDep, DestinationsDep, database_errors
from serving.routes import once
from serving.schemas import (
    MAX_ID,
    Approval,
    BulkDecision,
    BulkResult,
    DecisionPage,
    EditRefusal,
    GuardrailProblem,
    PriceEdit,
    PriceSuggestion,
    PriceSuggestionPage,
    Problem,
    Rejection,
    StatusFilter,
    SuggestionBatch,
    SuggestionDecision,
)

router = APIRouter(prefix="/v1/price-suggestions", tags=["price suggestions"],
                   dependencies=[Depends(as_merchandiser), Depends(once())],
                   responses={**AUTH_RESPONSES,
                              status.HTTP_503_SERVICE_UNAVAILABLE: {"model": Problem}})
decisions = APIRouter(prefix="/v1/price-decisions", tags=["price suggestions"],
                      dependencies=[Depends(as_merchandiser), Depends(once())],
                      responses={**AUTH_RESPONSES,
                                 status.HTTP_503_SERVICE_UNAVAILABLE: {"model": Problem}})
SuggestionId = Annotated[int, Path(ge=1, le=MAX_ID, description="The suggestion's id")]
BY_ID = "/{suggestion_id:int}"
"""A suggestion's path: digits only, so `/bulk` and `/batches` never match it (a wrong method
on them gets 405, not a 422 about the id)."""
BODY_RESPONSES: dict[int | str, dict] = {
    status.HTTP_400_BAD_REQUEST: {"model": Problem,
                                  "description": "The body cannot be read as UTF-8 JSON"},
}
DECIDE_RESPONSES: dict[int | str, dict] = {
    **BODY_RESPONSES,
    status.HTTP_404_NOT_FOUND: {"model": Problem, "description": "No such suggestion"},
    status.HTTP_409_CONFLICT: {"model": Problem,
                               "description": "The suggestion is no longer pending: decided "
                                              "(the first decision wins) or superseded"},
}


def _blank_to_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


Filter = Annotated[str | None, BeforeValidator(_blank_to_none)]
"""An optional exact-match filter; an empty value is no filter."""


@contextmanager
def review_errors() -> Iterator[None]:
    """The review's refusals as HTTP answers: 404, 409, 413 and 422 (bad arguments); a
    database outage as 503."""
    with database_errors():
        try:
            yield
        except SuggestionNotFound as error:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(error)) from error
        except DecisionConflict as error:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(error)) from error
        except TooManyForBulk as error:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                                detail=str(error)) from error
        except ValueError as error:  # the body schemas rule these out first
            raise RequestValidationError([{"type": "value_error", "loc": ("body",),
                                           "msg": str(error), "input": None}]) from error


@router.get(
    "", response_model=PriceSuggestionPage, summary="Stored price suggestions, for review",
    description="Suggestions matching every filter given (empty channel, category and batch "
                "filters are ignored), newest batch first, then by item and channel; `total` "
                "counts every match, `limit` and `offset` pick the page.")
def price_suggestions(
    database: DatabaseDep,
    review_status: Annotated[StatusFilter, Query(
        alias="status", description="Review status; `any` lists every status")] = "pending",
    channel: Annotated[Filter, Query(description="Only this sales channel")] = None,
    category: Annotated[Filter, Query(description="Only items of this catalog category")] = None,
    batch_id: Annotated[Filter, Query(description="Only this optimizer run")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size")] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID, description="Matches to skip")] = 0,
) -> PriceSuggestionPage:
    filters = (None if review_status == "any" else review_status, channel, category, batch_id)
    with database_errors():
        rows = list_suggestions(database, *filters, limit=limit, offset=offset)
        total = count_suggestions(database, *filters)
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


@router.get(BY_ID, response_model=PriceSuggestion, summary="One suggestion",
            responses={status.HTTP_404_NOT_FOUND: {"model": Problem}})
def price_suggestion(database: DatabaseDep, suggestion_id: SuggestionId) -> PriceSuggestion:
    with database_errors():
        row = get_suggestion(database, suggestion_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            detail=f"no price suggestion with id {suggestion_id}")
    return PriceSuggestion.model_validate(row)


@router.post(f"{BY_ID}/approve", response_model=PriceSuggestion,
             summary="Approve a pending suggestion at its suggested price",
             responses=DECIDE_RESPONSES)
def approve(database: DatabaseDep, destinations: DestinationsDep, caller: MerchandiserKey,
            suggestion_id: SuggestionId, body: Approval | None = None) -> PriceSuggestion:
    with review_errors():
        row = decide(database, suggestion_id, "approve", caller.name,
                     reason=body.reason if body else None, destinations=destinations)
    return PriceSuggestion.model_validate(row)


@router.post(f"{BY_ID}/reject", response_model=PriceSuggestion,
             summary="Reject a pending suggestion, with a reason", responses=DECIDE_RESPONSES)
def reject(database: DatabaseDep, caller: MerchandiserKey, suggestion_id: SuggestionId,
           body: Rejection) -> PriceSuggestion:
    with review_errors():
        row = decide(database, suggestion_id, "reject", caller.name, reason=body.reason)
    return PriceSuggestion.model_validate(row)


@router.post(
    f"{BY_ID}/edit", response_model=PriceSuggestion,
    summary="Approve a pending suggestion at another price",
    description="The price must keep every guardrail of the suggestion's batch: its floor "
                "and ceiling, the price endings and the spread of the item's channel prices; "
                "otherwise 422 names the rule it breaks.",
    responses={**DECIDE_RESPONSES, status.HTTP_422_UNPROCESSABLE_CONTENT: {
        "model": EditRefusal,
        "description": "The price breaks a guardrail (`rule` names it), or the request "
                       "breaks the schema"}})
def edit(database: DatabaseDep, destinations: DestinationsDep, caller: MerchandiserKey,
         suggestion_id: SuggestionId, body: PriceEdit) -> PriceSuggestion | JSONResponse:
    try:
        with review_errors():
            row = decide(database, suggestion_id, "edit", caller.name, reason=body.reason,
                         price=body.price, destinations=destinations)
    except GuardrailBreach as breach:
        problem = GuardrailProblem(detail=str(breach), rule=breach.rule)  # type: ignore[arg-type]
        return JSONResponse(jsonable_encoder(problem),
                            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    return PriceSuggestion.model_validate(row)


@router.post(
    "/bulk", response_model=BulkResult, summary="Approve or reject many pending suggestions",
    description="By `ids` (every one must exist and be pending, else nothing is decided: 404 "
                "or 409) or, without ids, every pending suggestion matching the filters (at "
                "least one; blank ones are no filter). Rejecting needs a reason. One "
                "transaction: all or nothing. At most 5,000 suggestions (413 beyond).",
    responses={**DECIDE_RESPONSES, status.HTTP_413_CONTENT_TOO_LARGE: {
        "model": Problem, "description": "Too many suggestions for one request"}})
def bulk(database: DatabaseDep, destinations: DestinationsDep, caller: MerchandiserKey,
         body: BulkDecision) -> BulkResult:
    with review_errors():  # `BulkDecision` checked the ids, filters and reason
        if unstorable := sorted({id_ for id_ in body.ids or () if not 1 <= id_ <= MAX_ID}):
            raise SuggestionNotFound(unstorable)  # no id beyond the database's integers
        ids = decide_many(database, body.action, caller.name, body.ids, reason=body.reason,
                          destinations=destinations, **body.filters())
    return BulkResult(action=body.action, decided=len(ids), ids=ids)


@decisions.get(
    "", response_model=DecisionPage, summary="The review's audit log",
    description="Every decision on a suggestion (approved, rejected, edited, superseded): "
                "who, when, the price before and after and why; newest first; per item, "
                "channel, batch or suggestion.")
def decision_log(
    database: DatabaseDep,
    item_id: Annotated[Filter, Query(description="Only this item")] = None,
    channel: Annotated[Filter, Query(description="Only this sales channel")] = None,
    batch_id: Annotated[Filter, Query(description="Only this optimizer run")] = None,
    suggestion_id: Annotated[int | None, Query(ge=1, le=MAX_ID,
                                               description="Only this suggestion")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size")] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID, description="Entries to skip")] = 0,
) -> DecisionPage:
    with database_errors():
        rows = list_decisions(database, item_id, channel, batch_id, suggestion_id,
                              limit=limit, offset=offset)
        total = count_decisions(database, item_id, channel, batch_id, suggestion_id)
    return DecisionPage(items=[SuggestionDecision.model_validate(row) for row in rows],
                        total=total, limit=limit, offset=offset)
