"""`POST /v1/events`: the storefront's behavioural events (and channels' stock reports), one
or a batch of up to `MAX_EVENTS`, appended to the event stream (`features.stream`) all or
nothing. 202 only once the batch is in the stream; the stream consumer writes the log and
the online features from there. A bad batch gets 422 naming the index and field of every
bad event, and nothing of it is written; an unreachable stream gets 503 with Retry-After."""

import json
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from features.schemas import EVENT_LIST, Event
from features.stream import EVENTS, StreamUnavailableError
from serving.auth import AUTH_RESPONSES, as_storefront
from serving.deps import StreamDep
from serving.schemas import EventsAccepted, Problem

MAX_EVENTS = 1000
MAX_BODY_BYTES = 4 * 1024 * 1024
RETRY_AFTER_SECONDS = 5
router = APIRouter(prefix="/v1/events", tags=["events"], dependencies=[Depends(as_storefront)],
                   responses=AUTH_RESPONSES)
_event_schema: dict[str, Any] = Event.model_json_schema()


def _bad_body(message: str, body: Any = None) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": ("body",), "msg": message,
                                    "input": body}])


def _events(raw: bytes) -> list[Event]:
    """The request's events, or 422 naming the index and field of every problem."""
    try:
        body = json.loads(raw)
    except ValueError as error:
        raise _bad_body(f"the body is not JSON: {error}") from None
    records = [body] if isinstance(body, dict) else body
    if not isinstance(records, list) or not records:
        raise _bad_body("expected an event object or a non-empty array of events",
                        type(body).__name__)
    if len(records) > MAX_EVENTS:
        raise _bad_body(f"at most {MAX_EVENTS} events per request, got {len(records)}")
    try:
        events = EVENT_LIST.validate_python(records)
    except ValidationError as error:
        raise RequestValidationError([{**detail, "loc": ("body", *detail["loc"])}
                                      for detail in error.errors()]) from None
    first: dict[str, int] = {}
    duplicates = [{"type": "value_error", "loc": ("body", index, "event_id"),
                   "msg": f"duplicate event_id: event {first[event.event_id]} has it too",
                   "input": event.event_id}
                  for index, event in enumerate(events)
                  if first.setdefault(event.event_id, index) != index]
    if duplicates:
        raise RequestValidationError(duplicates)
    return events


@router.post(
    "", status_code=status.HTTP_202_ACCEPTED, response_model=EventsAccepted,
    summary="Send behavioural events",
    description=f"One event, or an array of up to {MAX_EVENTS}. 202 once they are durably "
                "in the event stream; the online features reflect them within a second or "
                "so. An event sent again (same `event_id`, same `ts`) is counted once. "
                "`request_id`: the recommendations response the event follows. 422: the "
                "index (`loc[1]`) and field of every bad event, none of the batch written. "
                "503: the stream is unreachable, nothing was accepted; retry after the "
                "`Retry-After` seconds.",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"oneOf": [_event_schema, {"type": "array", "items": _event_schema,
                                             "minItems": 1, "maxItems": MAX_EVENTS}]}}}}},
    responses={
        status.HTTP_413_CONTENT_TOO_LARGE: {"model": Problem,
                                                   "description": "The body is too large"},
        status.HTTP_503_SERVICE_UNAVAILABLE: {"model": Problem,
                                              "description": "The event stream is "
                                                             "unreachable"}})
async def post_events(request: Request, stream: StreamDep) -> EventsAccepted:
    declared = request.headers.get("content-length", "0")
    too_large = declared.isdigit() and int(declared) > MAX_BODY_BYTES
    raw = b"" if too_large else await request.body()
    if too_large or len(raw) > MAX_BODY_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                            detail=f"the body may hold at most {MAX_BODY_BYTES} bytes")
    events = _events(raw)
    records = [event.model_dump(mode="json", exclude_none=True) for event in events]
    try:
        await run_in_threadpool(stream.append, EVENTS, records)
    except StreamUnavailableError as error:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(error),
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from error
    return EventsAccepted(accepted=len(events))
