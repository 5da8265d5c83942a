"""ASGI middleware of the service.

`RequestMiddleware`, around every HTTP request: a fresh random (version 4) UUID
(`request.state.request_id`), sent back as the `X-Request-ID` response header and set in
`serving.observability.REQUEST_ID` while the request runs (log lines carry it;
recommendations echo it in the body); the request timed and its status counted by route
template, what raised counted, and the request wrapped in the trace's server span when
tracing is on (`serving.observability`). One layer, one wrapper of `send`: it runs on every
request.
"""

import random
import uuid
from time import perf_counter

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving import observability

REQUEST_ID_HEADER = "X-Request-ID"


def new_request_id() -> uuid.UUID:
    """A random version-4 UUID from the process's Mersenne Twister (reseeded in a forked
    child), not `uuid.uuid4`: its `os.urandom` is a system call, which releases the GIL on
    the event loop thread, and taking the GIL back behind a busy thread-pool thread costs up
    to a switch interval (5 ms). A request id needs uniqueness, not secrecy."""
    return uuid.UUID(int=random.getrandbits(128), version=4)


def route_of(scope: Scope) -> str:
    """The template of the route that answered (`/v1/users/{user_id}/recommendations`)."""
    return getattr(scope.get("route"), "path_format", None) or observability.UNMATCHED


class RequestMiddleware:
    """Every HTTP request's id (`X-Request-ID`), latency, status and exceptions by route
    template, and its span."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        header = str(request_id)
        method = scope["method"]
        status = 500  # unless a response starts

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = header
            await send(message)

        token = observability.REQUEST_ID.set(header)
        start = perf_counter()
        error: BaseException | None = None
        with observability.request_span(method) as span:
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                error = exc
                raise
            finally:
                route = route_of(scope)
                observability.record_request(method, route, status, perf_counter() - start,
                                             error)
                if span is not None:
                    observability.end_request_span(span, method, route, status)
                observability.REQUEST_ID.reset(token)
