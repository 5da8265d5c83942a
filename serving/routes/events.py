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
DUPLICATE_ID = "duplicate event_id"


def _variant(event_types: list[str], required: list[str], without: list[str]) -> dict[str, Any]:
    """`Event`'s JSON schema narrowed to some event types: the fields those types require
    may not be null, the fields they may not carry are left out."""
    schema = Event.model_json_schema()
    properties = {name: dict(spec) for name, spec in schema["properties"].items()
                  if name not in without}
    properties["event_type"] = {**properties["event_type"], "enum": event_types}
    properties["event_type"].pop("const", None)
    for name in required:
        spec = properties[name]
        properties[name] = next(branch for branch in spec.get("anyOf", [spec])
                                if branch.get("type") != "null") | {
            key: value for key, value in spec.items() if key not in ("anyOf", "default")}
    return {**schema, "properties": properties,
            "required": sorted({*schema["required"], *required})}


_event_schema: dict[str, Any] = {"oneOf": [
    _variant(["view", "add_to_cart", "remove_from_cart"], ["session_id", "currency"],
             ["stock_on_hand"]),
    _variant(["purchase", "return"], ["session_id", "currency", "unit_price"],
             ["stock_on_hand"]),
    _variant(["inventory"], ["stock_on_hand"], []),
]}
"""The request body's event: one shape per kind of event (the rules of `Event` the schema
can say)."""


def _bad_body(message: str, body: Any = None) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": ("body",), "msg": message,
                                    "input": body}])


JSON_TYPES = {"quantity": "integer", "stock_on_hand": "integer", "unit_price": "number",
              "ts": "string"}
"""Fields whose JSON type the schema fixes where `Event` (which also reads CSV text) would
convert: no "3" or `false` for a number, no number for a time."""


def _json_type_errors(records: list) -> list[dict]:
    def fits(value: Any, kind: str) -> bool:
        if kind == "string":
            return isinstance(value, str)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return kind == "number" or float(value).is_integer()

    return [{"type": f"{kind}_type", "loc": ("body", index, name),
             "msg": f"Input should be a JSON {kind}", "input": record[name]}
            for index, record in enumerate(records) if isinstance(record, dict)
            for name, kind in JSON_TYPES.items()
            if record.get(name) is not None and not fits(record[name], kind)]


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
    wrong_types = _json_type_errors(records)
    if wrong_types:
        raise RequestValidationError(wrong_types)
    try:
        events = EVENT_LIST.validate_python(records)
    except ValidationError as error:
        raise RequestValidationError([{**detail, "loc": ("body", *detail["loc"])}
                                      for detail in error.errors()]) from None
    first: dict[str, int] = {}
    duplicates = [{"type": "value_error", "loc": ("body", index, "event_id"),
                   "msg": f"{DUPLICATE_ID}: event {first[event.event_id]} has it too",
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
                "so. An event sent again (same `event_id`, same `ts`) is counted once. `ts` "
                "without an offset is UTC; its UTC instant must fall within years 1-9999. "
                "`request_id`: the recommendations response the event follows. 422: the "
                "index (`loc[1]`) and field of every bad event, none of the batch written. "
                "503: the stream is unreachable, nothing was accepted; retry after the "
                "`Retry-After` seconds.",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"oneOf": [_event_schema, {"type": "array", "items": _event_schema,
                                             "minItems": 1, "maxItems": MAX_EVENTS}]}}}}},
    responses={
        status.HTTP_422_UNPROCESSABLE_CONTENT: {
            "description": "Bad events: `loc` is `[\"body\", index, field]` for each",
            "content": {"application/json": {"schema": {
                "$ref": "#/components/schemas/HTTPValidationError"}}}},
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
