"""Who is calling: API keys sent as `Authorization: Bearer <key>`, and the role each route
needs (`db.schemas.Role`).

Routers depend on `as_storefront`, `as_merchandiser` or `as_admin`; a route that needs the
caller (its key's name and role) takes `StorefrontKey`, `MerchandiserKey` or `AdminKey`. A
missing, unknown or revoked key gets 401 with `WWW-Authenticate: Bearer`; a key whose role
does not grant the route gets 403 naming the role needed. `admin` keys may call every route.
Keys are looked up by their SHA-256 in the service database (`db.keys`); a found key is
remembered for `KEY_CACHE_SECONDS` per worker, so the storefront's requests do not each
query the database (a revoked key is refused within that time at most); while the database is
down, keys found before are still taken (recommendations keep answering), others get 503.
A remembered key is checked on the event loop; only a lookup in the database goes to the
thread pool, so a keyed request costs no thread hop of its own.
"""

import logging
import threading
import time
from typing import Annotated, NamedTuple, cast

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool

from db.keys import ApiKey, find_key_by_hash, hash_key
from db.schemas import ROLES, Role
from serving.deps import ServiceDatabase, database_errors
from serving.schemas import Problem

logger = logging.getLogger(__name__)
KEY_CACHE_SECONDS = 30.0
bearer = HTTPBearer(auto_error=False, description="An API key (`tailor keys create --role "
                                                  "storefront|merchandiser|admin`)")


class Caller(NamedTuple):
    """The key a request came with."""

    name: str
    role: Role


class KeyCache:
    """Keys found in the database, remembered for `seconds` (unknown keys are not). While the
    database cannot be reached, a key found before is still taken, however long ago: the
    storefront keeps its recommendations through a database outage."""

    def __init__(self, seconds: float = KEY_CACHE_SECONDS):
        self.seconds = seconds
        self._found: dict[str, tuple[ApiKey, float]] = {}
        self._lock = threading.Lock()

    def remembered(self, digest: str) -> ApiKey | None:
        """The key whose SHA-256 is `digest` when found less than `seconds` ago (no I/O);
        None when it must be looked up."""
        with self._lock:
            hit = self._found.get(digest)
        return hit[0] if hit is not None and hit[1] > time.monotonic() else None

    def find_by_hash(self, database: ServiceDatabase, digest: str) -> ApiKey | None:
        """The active key whose SHA-256 is `digest`, None when unknown or revoked."""
        now = time.monotonic()
        with self._lock:
            hit = self._found.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        try:
            database.ensure_schema()
            found = find_key_by_hash(database.engine, digest)
        except DBAPIError:
            if hit is None:
                raise
            logger.warning("the service database is unavailable: key '%s' accepted as "
                           "verified before", hit[0].name)
            return hit[0]
        with self._lock:
            if found is None:
                self._found.pop(digest, None)
            else:
                self._found[digest] = (found, now + self.seconds)
        return found


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail,
                         headers={"WWW-Authenticate": "Bearer"})


async def authenticate(request: Request,
                       credentials: HTTPAuthorizationCredentials | None) -> Caller:
    """The caller of a request, from its bearer key (401 when missing, unknown or revoked)."""
    if credentials is None or not credentials.credentials.strip():
        raise _unauthorized("missing API key: send the header 'Authorization: Bearer <key>'")
    keys = cast(KeyCache, request.app.state.keys)
    digest = hash_key(credentials.credentials.strip())
    key = keys.remembered(digest)
    if key is None:
        database = cast(ServiceDatabase, request.app.state.database)
        with database_errors():
            key = await run_in_threadpool(keys.find_by_hash, database, digest)
    if key is None:
        raise _unauthorized("unknown or revoked API key")
    return Caller(key.name, key.role)


def require(role: Role):
    """A dependency: the caller, when its key has `role` (or `admin`); else 401 / 403."""

    async def caller_with_role(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Caller:
        caller = await authenticate(request, credentials)
        if caller.role not in (role, "admin"):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"this route needs a key with the role '{role}'; the key "
                       f"'{caller.name}' has the role '{caller.role}'")
        return caller

    return caller_with_role


as_storefront, as_merchandiser, as_admin = (require(role) for role in ROLES)
StorefrontKey = Annotated[Caller, Depends(as_storefront)]
MerchandiserKey = Annotated[Caller, Depends(as_merchandiser)]
AdminKey = Annotated[Caller, Depends(as_admin)]
AUTH_RESPONSES: dict[int | str, dict] = {
    status.HTTP_401_UNAUTHORIZED: {"model": Problem, "description": "No key, or an unknown "
                                                                    "or revoked one"},
    status.HTTP_403_FORBIDDEN: {"model": Problem, "description": "The key's role does not "
                                                                 "grant this route"},
}
"""The responses every keyed route may give, for its OpenAPI description."""
