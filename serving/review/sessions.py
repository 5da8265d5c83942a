"""Sessions of the review page: a merchandiser logs in with an API key once, and the browser
keeps a signed session cookie instead of the key.

The cookie (HttpOnly, SameSite=Lax, Secure over HTTPS, path `/review`) holds the key's
SHA-256, never the key, and the session's CSRF token, signed with the service's session
secret (`itsdangerous`) and valid for `SESSION_SECONDS`. Every request re-checks the key
(`serving.auth.KeyCache`), so revoking it ends its sessions within the key cache's time.
Every form carries the CSRF token, compared with the session's in constant time; the login
form, before any session, uses a double-submit cookie. The secret is
`TAILOR_SERVING_SESSION_SECRET`, or one generated once into the data directory (shared by
the workers of one machine; set the variable when several machines serve).
"""

import hmac
import os
import secrets
from pathlib import Path
from typing import NamedTuple

from itsdangerous import BadData, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "tailor_review"
LOGIN_COOKIE = "tailor_review_login"
FLASH_COOKIE = "tailor_review_flash"
COOKIE_PATH = "/review"
SESSION_SECONDS = 12 * 3600
FLASH_SECONDS = 60
SECRET_FILE = "session_secret"


class Session(NamedTuple):
    key_hash: str
    csrf: str


class Flash(NamedTuple):
    """A message for the next page: `kind` is `ok` or `error`."""

    kind: str
    text: str


def load_secret(data_dir: Path, configured: str | None) -> str:
    """The configured secret, else the one stored in `data_dir` (created on first use, owner
    read-only, by exactly one of concurrently starting workers)."""
    if configured:
        return configured
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / SECRET_FILE
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another worker may be writing it this instant
            secret = path.read_text().strip()
            if secret:
                return secret
            os.sched_yield()
        raise RuntimeError(f"{path} is empty: delete it to make a new session secret") from None
    secret = secrets.token_hex(32)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secret)
    return secret


def same_token(given: str | None, expected: str | None) -> bool:
    """Whether a submitted CSRF token matches, in constant time (None never matches)."""
    return bool(given and expected) and hmac.compare_digest(str(given), str(expected))


class Sessions:
    """Signs and reads the review page's cookies."""

    def __init__(self, secret: str):
        self._sessions = URLSafeTimedSerializer(secret, salt="tailor-review-session")
        self._flashes = URLSafeTimedSerializer(secret, salt="tailor-review-flash")

    @staticmethod
    def _set(request: Request, response: Response, name: str, value: str,
             max_age: int | None, same_site: str = "lax") -> None:
        response.set_cookie(name, value, max_age=max_age, path=COOKIE_PATH, httponly=True,
                            samesite=same_site,  # type: ignore[arg-type]
                            secure=request.url.scheme == "https")

    def start(self, request: Request, response: Response, key_hash: str) -> None:
        """Log the browser in as the key with this SHA-256 (a new CSRF token)."""
        token = self._sessions.dumps([key_hash, secrets.token_urlsafe(32)])
        self._set(request, response, SESSION_COOKIE, token, SESSION_SECONDS)
        response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)

    @staticmethod
    def _load(request: Request, name: str, serializer: URLSafeTimedSerializer,
              max_age: int) -> list | None:
        """The signed value of cookie `name`, None when missing, forged, expired or
        malformed."""
        cookie = request.cookies.get(name)
        if not cookie:
            return None
        try:
            value = serializer.loads(cookie, max_age=max_age)
        except BadData:  # a bad or expired signature, or a payload that is not JSON
            return None
        return value if isinstance(value, list) and len(value) == 2 else None

    def read(self, request: Request) -> Session | None:
        """The browser's valid session, None when it has none, a forged or an expired one."""
        value = self._load(request, SESSION_COOKIE, self._sessions, SESSION_SECONDS)
        return None if value is None else Session(*value)

    @staticmethod
    def end(response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)

    @staticmethod
    def login_token(request: Request) -> str:
        """The login form's CSRF token: the browser's login cookie, or a new one."""
        return request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)

    def keep_login_token(self, request: Request, response: Response, token: str) -> None:
        """Set the login form's token as a strict cookie too (double submit)."""
        self._set(request, response, LOGIN_COOKIE, token, 3600, same_site="strict")

    def flash(self, request: Request, response: Response, flash: Flash) -> None:
        """Leave a message for the next page the browser shows."""
        self._set(request, response, FLASH_COOKIE, self._flashes.dumps(list(flash)),
                  FLASH_SECONDS)

    def read_flash(self, request: Request) -> Flash | None:
        """The message the previous request left (`clear_flash` once shown)."""
        value = self._load(request, FLASH_COOKIE, self._flashes, FLASH_SECONDS)
        return None if value is None else Flash(*value)

    @staticmethod
    def clear_flash(response: Response) -> None:
        response.delete_cookie(FLASH_COOKIE, path=COOKIE_PATH)
