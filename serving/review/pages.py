"""The merchandisers' review page, `/review`: server-rendered (Jinja2) over `db.reviews`.

A merchandiser (or admin) logs in with an API key and gets a session cookie
(`serving.review.sessions`). The queue lists suggestions paged in the database, filtered by
status, channel, category and batch, sorted by expected profit change; each row shows the
current and suggested price, the expected profit change with its interval, the guardrail
bounds and the explanation, and takes an approve, reject (with a reason) or edit (a price
checked against the guardrails). Selected rows, or every pending row matching the filters,
are approved or rejected in one transaction. An item's page shows its suggestions and audit
history. Every approved suggestion shows where its price stands on its way to the channel
(`db.outbox`); the deliveries page lists the deliveries by status (the dead letters by
default, each with its reason) and puts a dead letter back in the queue. Every form posts
back with the session's CSRF token and redirects (303) to the page it came from with a
message. Pages are not part of the API's OpenAPI contract.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from math import ceil, isfinite
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal, NamedTuple, cast
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Form, Path, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from db.keys import ApiKey, hash_key
from db.outbox import (
    DeliveryError,
    count_deliveries,
    deliveries_of,
    list_deliveries,
    retry_failed,
    status_counts,
)
from db.reviews import (
    GuardrailBreach,
    ReviewError,
    decide,
    decide_many,
    list_decisions,
)
from db.schemas import DELIVERY_STATUSES, STATUSES, SuggestionStatus
from db.suggestions import Sort, count_suggestions, filter_choices, list_suggestions
from serving.auth import KeyCache
from serving.deps import ServiceDatabase, get_destinations
from serving.review.sessions import LOGIN_COOKIE, Flash, Sessions, same_token
from serving.schemas import MAX_ID, DeliveryStatusFilter

HERE = FilePath(__file__).parent
PAGE_SIZE = 50
HISTORY_LIMIT = 200
REVIEWER_ROLES = ("merchandiser", "admin")
APPROVED = ("approved", "edited")
"""The review statuses whose suggestions have a delivery."""
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
SORTS: dict[str, str] = {"gain_desc": "Expected gain, highest first",
                         "gain_asc": "Expected gain, lowest first",
                         "newest": "Newest batch first"}

router = APIRouter(prefix="/review", include_in_schema=False)
templates = Jinja2Templates(directory=HERE / "templates")
NONE = "\u2014"  # an em dash where a value is missing
templates.env.filters["money"] = lambda value: NONE if value is None else f"{value:,.2f}"
templates.env.filters["signed"] = lambda value: NONE if value is None else f"{value:+,.2f}"
templates.env.filters["percent"] = lambda value: f"{value:+.1%}"
templates.env.filters["utc"] = (lambda value: NONE if value is None
                                else f"{value:%Y-%m-%d %H:%M} UTC")


class PageError(Exception):
    """A page that cannot be shown: answered with the error page and `status_code`."""

    def __init__(self, status_code: int, message: str) -> None:
        self.status_code = status_code
        self.message = message
        super().__init__(message)


class Reviewer(NamedTuple):
    name: str
    role: str
    csrf: str


def _sessions(request: Request) -> Sessions:
    return cast(Sessions, request.app.state.sessions)


def _database(request: Request) -> ServiceDatabase:
    return cast(ServiceDatabase, request.app.state.database)


def _engine(request: Request) -> Engine:
    return _database(request).engine


@contextmanager
def database_page() -> Iterator[None]:
    """A database outage as the 503 error page."""
    try:
        yield
    except DBAPIError as error:
        raise PageError(status.HTTP_503_SERVICE_UNAVAILABLE,
                        "The service database is unavailable; try again shortly.") from error


def _active_key(request: Request, key_hash: str) -> ApiKey | None:
    """The active key with this SHA-256, through the worker's key cache."""
    with database_page():
        return cast(KeyCache, request.app.state.keys).find_by_hash(_database(request), key_hash)


def signed_in(request: Request) -> Reviewer | None:
    """The reviewer of the request's session: its key still active, with a reviewing role."""
    session = _sessions(request).read(request)
    if session is None:
        return None
    key = _active_key(request, session.key_hash)
    if key is None or key.role not in REVIEWER_ROLES:
        return None
    return Reviewer(key.name, key.role, session.csrf)


class LoginRequired(Exception):
    """No valid session: redirect to the login page."""


def reviewer(request: Request) -> Reviewer:
    """A dependency: the signed-in reviewer, else a redirect to the login page."""
    found = signed_in(request)
    if found is None:
        raise LoginRequired
    return found


ReviewerDep = Annotated[Reviewer, Depends(reviewer)]
CsrfField = Annotated[str, Form(max_length=200)]


def checked(found: Reviewer, csrf_token: str) -> None:
    if not same_token(csrf_token, found.csrf):
        raise PageError(status.HTTP_403_FORBIDDEN,
                        "This form has expired or did not come from this page; reload the "
                        "page and try again.")


def _back(to: str) -> str:
    """A page of the review to return to (never another site)."""
    return to if to.startswith("/review") and not to.startswith("//") else "/review"


def redirect(request: Request, to: str, flash: Flash | None = None) -> RedirectResponse:
    response = RedirectResponse(_back(to), status_code=status.HTTP_303_SEE_OTHER)
    if flash is not None:
        _sessions(request).flash(request, response, flash)
    return response


def page(request: Request, template: str, context: dict[str, Any],
         status_code: int = 200) -> HTMLResponse:
    """A rendered page with the message left by the previous request, if any."""
    sessions = _sessions(request)
    flash = sessions.read_flash(request)
    response = templates.TemplateResponse(request, template, {"flash": flash, **context},
                                          status_code=status_code, headers=SECURITY_HEADERS)
    if flash is not None:
        sessions.clear_flash(response)
    return response


# ------------------------------------------------------------------------------ log in, out


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> Response:
    if signed_in(request) is not None:
        return RedirectResponse("/review", status_code=status.HTTP_303_SEE_OTHER)
    return login_form(request)


def login_form(request: Request, error: str | None = None,
               status_code: int = 200) -> HTMLResponse:
    sessions = _sessions(request)
    token = sessions.login_token(request)
    response = page(request, "login.html", {"error": error, "csrf_token": token},
                    status_code)
    sessions.keep_login_token(request, response, token)
    return response


@router.post("/login")
def log_in(request: Request, key: Annotated[str, Form()], csrf_token: CsrfField) -> Response:
    """Start a session for a merchandiser or admin key."""
    if not same_token(csrf_token, request.cookies.get(LOGIN_COOKIE)):
        return login_form(request, "The login form expired; please try again.",
                          status.HTTP_403_FORBIDDEN)
    digest = hash_key(key.strip())
    found = _active_key(request, digest)
    if found is None:
        return login_form(request, "Unknown or revoked key.", status.HTTP_401_UNAUTHORIZED)
    if found.role not in REVIEWER_ROLES:
        return login_form(request, f"The key '{found.name}' has the role '{found.role}'; the "
                                   "review needs a merchandiser key.",
                          status.HTTP_403_FORBIDDEN)
    response = RedirectResponse("/review", status_code=status.HTTP_303_SEE_OTHER)
    _sessions(request).start(request, response, digest)
    return response


@router.post("/logout")
def log_out(request: Request, found: ReviewerDep, csrf_token: CsrfField) -> Response:
    checked(found, csrf_token)
    response = RedirectResponse("/review/login", status_code=status.HTTP_303_SEE_OTHER)
    _sessions(request).end(response)
    return response


# ----------------------------------------------------------------------------------- queue


Blank = Annotated[str, Query(max_length=200)]


@router.get("", response_class=HTMLResponse)
def queue(
    request: Request, found: ReviewerDep,
    review_status: Annotated[SuggestionStatus, Query(alias="status")] = "pending",
    channel: Blank = "", category: Blank = "", batch: Blank = "",
    sort: Annotated[Sort, Query()] = "gain_desc",
    page_number: Annotated[int, Query(alias="page", ge=1, le=1_000_000)] = 1,
) -> HTMLResponse:
    """The suggestions matching the filters, one page of `PAGE_SIZE`."""
    filters = {"status": review_status, "channel": channel.strip() or None,
               "category": category.strip() or None, "batch_id": batch.strip() or None}
    with database_page():
        total = count_suggestions(_database(request).engine, **filters)
        pages = max(1, ceil(total / PAGE_SIZE))
        page_number = min(page_number, pages)
        rows = list_suggestions(_database(request).engine, **filters, sort=sort,
                                limit=PAGE_SIZE, offset=(page_number - 1) * PAGE_SIZE)
        choices = filter_choices(_database(request).engine, review_status)
        deliveries = _deliveries_of_approved(_database(request).engine, rows)
        failed = count_deliveries(_database(request).engine, status="failed")
    query = {"status": review_status, "channel": channel, "category": category,
             "batch": batch, "sort": sort}
    here = f"/review?{urlencode(query | {'page': page_number})}"
    return page(request, "queue.html", {
        "reviewer": found, "rows": rows, "total": total, "page": page_number, "pages": pages,
        "query": query, "here": here, "choices": choices, "statuses": STATUSES,
        "sorts": SORTS, "page_size": PAGE_SIZE, "deliveries": deliveries,
        "failed_deliveries": failed,
        "page_link": lambda number: f"/review?{urlencode(query | {'page': number})}",
    })


@router.get("/items/{item_id}", response_class=HTMLResponse)
def item_history(request: Request, found: ReviewerDep, item_id: str) -> HTMLResponse:
    """An item's suggestions (every batch and status) and its audit history."""
    engine = _database(request).engine
    with database_page():
        suggestions = list_suggestions(engine, item_id=item_id, limit=HISTORY_LIMIT)
        history = list_decisions(engine, item_id=item_id, limit=HISTORY_LIMIT)
        deliveries = _deliveries_of_approved(engine, suggestions)
        failed = count_deliveries(engine, status="failed")
    if not suggestions:
        raise PageError(status.HTTP_404_NOT_FOUND, f"No price suggestion for item {item_id}.")
    return page(request, "item.html", {"reviewer": found, "item_id": item_id,
                                       "suggestions": suggestions, "history": history,
                                       "deliveries": deliveries, "failed_deliveries": failed,
                                       "here": f"/review/items/{item_id}"})


def _deliveries_of_approved(engine: Engine, suggestions: list[dict[str, Any]]
                            ) -> dict[int, dict[str, Any]]:
    """The newest delivery of each approved suggestion among `suggestions` (one query)."""
    return deliveries_of(engine, [row["id"] for row in suggestions
                                  if row["status"] in APPROVED])


# ------------------------------------------------------------------------------ deliveries


@router.get("/deliveries", response_class=HTMLResponse)
def deliveries_page(
    request: Request, found: ReviewerDep,
    delivery_status: Annotated[DeliveryStatusFilter, Query(alias="status")] = "failed",
    channel: Blank = "",
    page_number: Annotated[int, Query(alias="page", ge=1, le=1_000_000)] = 1,
) -> HTMLResponse:
    """Approved prices on their way to the channels, newest first, one page of `PAGE_SIZE`:
    by default the dead letters, each with its reason and a retry."""
    engine = _engine(request)
    filters = (None if delivery_status == "any" else delivery_status, channel.strip() or None)
    with database_page():
        counts = status_counts(engine)
        total = count_deliveries(engine, *filters)
        pages = max(1, ceil(total / PAGE_SIZE))
        page_number = min(page_number, pages)
        rows = list_deliveries(engine, *filters, limit=PAGE_SIZE,
                               offset=(page_number - 1) * PAGE_SIZE)
    query = {"status": delivery_status, "channel": channel}
    here = f"/review/deliveries?{urlencode(query | {'page': page_number})}"
    return page(request, "deliveries.html", {
        "reviewer": found, "rows": rows, "total": total, "page": page_number, "pages": pages,
        "query": query, "here": here, "statuses": (*DELIVERY_STATUSES, "any"),
        "channels": sorted({name for name, _ in counts}),
        "failed_deliveries": sum(count for (_, state), count in counts.items()
                                 if state == "failed"),
        "page_size": PAGE_SIZE,
        "page_link": lambda number: f"/review/deliveries?{urlencode(query | {'page': number})}",
    })


# ------------------------------------------------------------------------------- decisions


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def decided(request: Request, back: str, run: Callable[[], str],
            refusals: tuple[type[Exception], ...] = (ReviewError, ValueError)
            ) -> RedirectResponse:
    """Run a decision and go back to the page it came from with its outcome (a refusal, one
    of `refusals`, is an error message there: nothing was written)."""
    try:
        with database_page():
            outcome = Flash("ok", run())
    except GuardrailBreach as error:
        rule = f" (rule: {error.rule})" if error.rule else ""
        outcome = Flash("error", f"Edit refused: {error}{rule}.")
    except refusals as error:
        outcome = Flash("error", _sentence(str(error)))
    return redirect(request, back, outcome)


SuggestionId = Annotated[int, Path(ge=1, le=MAX_ID)]
DeliveryId = Annotated[int, Path(ge=1, le=MAX_ID)]
BackField = Annotated[str, Form(alias="next", max_length=2000)]


@router.post("/suggestions/{suggestion_id}/approve")
def approve(request: Request, found: ReviewerDep, suggestion_id: SuggestionId,
            csrf_token: CsrfField, back: BackField = "/review") -> Response:
    checked(found, csrf_token)

    def run() -> str:
        row = decide(_engine(request), suggestion_id, "approve", found.name,
                     destinations=get_destinations(request))
        return f"Approved {row['item_id']} on {row['channel']} at {row['approved_price']:.2f}."

    return decided(request, back, run)


@router.post("/suggestions/{suggestion_id}/reject")
def reject(request: Request, found: ReviewerDep, suggestion_id: SuggestionId,
           csrf_token: CsrfField, back: BackField = "/review",
           reason: Annotated[str, Form(max_length=1000)] = "") -> Response:
    checked(found, csrf_token)

    def run() -> str:
        row = decide(_engine(request), suggestion_id, "reject", found.name, reason=reason)
        return f"Rejected {row['item_id']} on {row['channel']}."

    return decided(request, back, run)


@router.post("/suggestions/{suggestion_id}/edit")
def edit(request: Request, found: ReviewerDep, suggestion_id: SuggestionId,
         csrf_token: CsrfField, price: Annotated[str, Form(max_length=50)],
         back: BackField = "/review") -> Response:
    checked(found, csrf_token)

    def run() -> str:
        try:
            value = float(price.strip())
        except ValueError:
            raise ValueError(f"field 'price' must be a number, got {price!r}") from None
        if not isfinite(value) or value <= 0:
            raise ValueError(f"field 'price' must be a positive price, got {price!r}")
        row = decide(_engine(request), suggestion_id, "edit", found.name, price=value,
                     destinations=get_destinations(request))
        return f"Approved {row['item_id']} on {row['channel']} at {value:.2f} (edited)."

    return decided(request, back, run)


@router.post("/bulk")
def bulk(
    request: Request, found: ReviewerDep, csrf_token: CsrfField,
    action: Annotated[Literal["approve", "reject"], Form()],
    scope: Annotated[Literal["selected", "matching"], Form()] = "selected",
    ids: Annotated[list[int] | None, Form()] = None,
    reason: Annotated[str, Form(max_length=1000)] = "",
    channel: Annotated[str, Form(max_length=200)] = "",
    category: Annotated[str, Form(max_length=200)] = "",
    batch: Annotated[str, Form(max_length=200)] = "",
    back: BackField = "/review",
) -> Response:
    """Approve or reject the selected suggestions, or every pending one matching the
    filters: all in one transaction, or none."""
    checked(found, csrf_token)

    def run() -> str:
        if scope == "selected" and not ids:
            raise ValueError("select at least one suggestion first")
        decided_ids = decide_many(
            _engine(request), action, found.name, ids if scope == "selected" else None,
            channel=channel.strip() or None, category=category.strip() or None,
            batch_id=batch.strip() or None, reason=reason,
            destinations=get_destinations(request))
        verb = "Approved" if action == "approve" else "Rejected"
        return f"{verb} {len(decided_ids)} suggestion{'s' * (len(decided_ids) != 1)}."

    return decided(request, back, run)


@router.post("/deliveries/{delivery_id}/retry")
def retry(request: Request, found: ReviewerDep, delivery_id: DeliveryId,
          csrf_token: CsrfField, back: BackField = "/review/deliveries") -> Response:
    """Put a dead letter back in the delivery queue."""
    checked(found, csrf_token)

    def run() -> str:
        row = retry_failed(_engine(request), delivery_id, found.name, datetime.now(UTC))
        return (f"Delivery {delivery_id} of {row['item_id']} on {row['channel']} at "
                f"{row['price']:.2f} is queued again.")

    return decided(request, back, run, refusals=(LookupError, DeliveryError))


# ------------------------------------------------------------------------------- the app


def render_error(request: Request, error: Exception) -> Response:
    if isinstance(error, LoginRequired):
        return RedirectResponse("/review/login", status_code=status.HTTP_303_SEE_OTHER)
    assert isinstance(error, PageError)
    return page(request, "error.html", {"message": error.message,
                                        "reviewer": None}, error.status_code)


def install(app: FastAPI) -> None:
    """Serve the review page on `app`: its routes, stylesheet and script, error pages (the
    lifespan sets `app.state.sessions`)."""
    app.include_router(router)
    app.mount("/review/static", StaticFiles(directory=HERE / "static"), name="review-static")
    app.add_exception_handler(LoginRequired, render_error)
    app.add_exception_handler(PageError, render_error)
