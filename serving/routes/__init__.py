"""One router per resource: `ops` (health, readiness, admin reload), `recommendations`,
`price_suggestions`, `channel_deliveries`; `reject_repeated` (a router dependency: `once`) keeps
their query parameters single-valued."""

from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.exceptions import RequestValidationError


def reject_repeated(request: Request, *repeatable: str) -> None:
    """422 when a query parameter other than `repeatable` is given more than once (the
    schema declares one value; the app would silently take the last)."""
    query = request.query_params
    repeated = sorted({name for name in query if name not in repeatable
                       and len(query.getlist(name)) > 1})
    if repeated:
        raise RequestValidationError([
            {"type": "repeated_parameter", "loc": ("query", name),
             "msg": "give this parameter once", "input": query.getlist(name)}
            for name in repeated])


def once(*repeatable: str) -> Callable[[Request], Awaitable[None]]:
    """`reject_repeated` as a router dependency."""

    async def single_valued(request: Request) -> None:
        reject_repeated(request, *repeatable)

    return single_valued
