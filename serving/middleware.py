"""ASGI middleware of the service.

`RequestIdMiddleware`: every HTTP request gets a fresh uuid4 (`request.state.request_id`, a
`UUID`), sent back as the `X-Request-ID` response header; recommendations echo it in the
body.
"""

import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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

        await self.app(scope, receive, send_with_id)
