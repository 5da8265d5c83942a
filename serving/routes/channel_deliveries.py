"""`/v1/channel-deliveries`: approved prices on their way to the sales channels (the
transactional outbox, `db.outbox`), dead letters among them with the reason, and the retry
that puts a dead letter back in the queue. Every route needs a merchandiser key
(`serving.auth`); 503 while the database is unreachable."""

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status

from db.outbox import DeliveryError, count_deliveries, list_deliveries, retry_failed
from serving.auth import AUTH_RESPONSES, MerchandiserKey, as_merchandiser
from serving.deps import DatabaseDep, database_errors
from serving.routes import once
from serving.routes.price_suggestions import Filter
from serving.schemas import (
    MAX_ID,
    ChannelDelivery,
    ChannelDeliveryPage,
    DeliveryStatusFilter,
    Problem,
)

router = APIRouter(prefix="/v1/channel-deliveries", tags=["channel deliveries"],
                   dependencies=[Depends(as_merchandiser), Depends(once())],
                   responses={**AUTH_RESPONSES,
                              status.HTTP_503_SERVICE_UNAVAILABLE: {"model": Problem}})
DeliveryId = Annotated[int, Path(ge=1, le=MAX_ID, description="The delivery's id")]
BY_ID = "/{delivery_id:int}"
"""A delivery's path: digits only, like a suggestion's."""


@router.get(
    "", response_model=ChannelDeliveryPage, summary="Approved prices and their delivery",
    description="Deliveries matching every filter given (empty channel and item filters are "
                "ignored), newest first; `status=failed` lists the dead letters, each with "
                "the reason in `last_error`. `total` counts every match, `limit` and "
                "`offset` pick the page.")
def channel_deliveries(
    database: DatabaseDep,
    delivery_status: Annotated[DeliveryStatusFilter, Query(
        alias="status", description="Delivery status; `any` lists every status")] = "any",
    channel: Annotated[Filter, Query(description="Only this sales channel")] = None,
    item_id: Annotated[Filter, Query(description="Only this item")] = None,
    suggestion_id: Annotated[int | None, Query(
        ge=1, le=MAX_ID, description="Only the deliveries of this suggestion")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size")] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID, description="Matches to skip")] = 0,
) -> ChannelDeliveryPage:
    filters = (None if delivery_status == "any" else delivery_status, channel, item_id,
               suggestion_id)
    with database_errors():
        rows = list_deliveries(database, *filters, limit=limit, offset=offset)
        total = count_deliveries(database, *filters)
    return ChannelDeliveryPage(items=[ChannelDelivery.model_validate(row) for row in rows],
                               total=total, limit=limit, offset=offset)


@router.post(
    f"{BY_ID}/retry", response_model=ChannelDelivery,
    summary="Put a dead letter back in the delivery queue",
    description="A `failed` delivery becomes `pending` again with a fresh retry budget; the "
                "delivery worker sends it on its next pass.",
    responses={
        status.HTTP_404_NOT_FOUND: {"model": Problem, "description": "No such delivery"},
        status.HTTP_409_CONFLICT: {"model": Problem,
                                   "description": "The delivery is not failed, or a newer "
                                                  "approved price of its item on its channel "
                                                  "exists (retrying would send a stale price)"},
    })
def retry(database: DatabaseDep, caller: MerchandiserKey,
          delivery_id: DeliveryId) -> ChannelDelivery:
    with database_errors():
        try:
            row = retry_failed(database, delivery_id, caller.name, datetime.now(UTC))
        except LookupError as error:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(error)) from error
        except DeliveryError as error:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(error)) from error
    return ChannelDelivery.model_validate(row)
