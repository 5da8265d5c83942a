"""ASGI middleware of the service.

`RequestIdMiddleware`: every HTTP request gets a fresh uuid4 (`request.state.request_id`, a
`UUID`), sent back as the `X-Request-ID` response header and set in
`serving.observability.REQUEST_ID` while the request runs (log lines carry it);
recommendations echo it in the body.

`MetricsMiddleware` (inside it): times every HTTP request and counts its status by route
template, counts what raised, and wraps the request in the trace's server span when tracing
is on (`serving.observability`).
"""

import uuid
from time import perf_counter

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving import observability

REQUEST_ID_HEADER = "X-Request-ID"


class RequestIdMiddleware:
    """Give every HTTP request a fresh uuid4 and send it back as `X-Request-ID`."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4()
        scope.setdefault("state", {})["request_id"] = request_id
        header = str(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = header
            await send(message)

        token = observability.REQUEST_ID.set(header)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            observability.REQUEST_ID.reset(token)


def route_of(scope: Scope) -> str:
    """The template of the route that answered (`/v1/users/{user_id}/recommendations`)."""
    return getattr(scope.get("route"), "path_format", None) or observability.UNMATCHED


class MetricsMiddleware:
    """Latency, status and exceptions of every HTTP request by route template; its span."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        status = 500  # unless a response starts

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        start = perf_counter()
        error: BaseException | None = None
        with observability.request_span(method) as span:
            try:
                await self.app(scope, receive, send_with_status)
            except Exception as exc:
                error = exc
                raise
            finally:
                route = route_of(scope)
                observability.record_request(method, route, status, perf_counter() - start,
                                             error)
                if span is not None:
                    observability.end_request_span(span, method, route, status)
