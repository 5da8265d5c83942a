"""API keys: created, listed, revoked and looked up by the key a client sends.

A key is `tlr_` + 43 URL-safe characters (256 random bits), shown once when created. Only its
SHA-256 is stored: with that much entropy a fast hash is as safe as a slow one, and it lets a
request find its key by an indexed equality lookup. The first characters (`key_prefix`) are
kept to tell keys apart in listings. Names are unique; a revoked key stays listed, refused.
"""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.schemas import ROLES, Role
from db.tables import ApiKeyRow

KEY_PREFIX = "tlr_"
SHOWN_PREFIX = 12  # characters of a key kept in clear to tell keys apart
DEMO_KEYS: tuple[tuple[str, Role], ...] = (("demo-merchandiser", "merchandiser"),
                                           ("demo-storefront", "storefront"))


@dataclass(frozen=True)
class ApiKey:
    """A stored key's public facts (never the key itself)."""

    name: str
    role: Role
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: ApiKeyRow) -> "ApiKey":
        return cls(row.name, row.role, row.key_prefix, row.created_at,  # type: ignore[arg-type]
                   row.revoked_at)


def hash_key(key: str) -> str:
    """The stored form of a key: its SHA-256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(engine: Engine, role: str, name: str | None = None) -> tuple[str, ApiKey]:
    """A new key with `role` (and a unique `name`; default `<role>-<6 hex>`): returns the key,
    to show once, and its stored facts. ValueError for an unknown role, a blank or taken name."""
    if role not in ROLES:
        raise ValueError(f"field 'role' must be one of {', '.join(ROLES)}, got {role!r}")
    if name is not None and not name.strip():
        raise ValueError("field 'name' must not be blank")
    name = name.strip() if name else f"{role}-{secrets.token_hex(3)}"
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKeyRow(name=name, role=role, key_hash=hash_key(key), key_prefix=key[:SHOWN_PREFIX],
                    created_at=datetime.now(UTC), revoked_at=None)
    try:
        with Session(engine) as session, session.begin():
            session.add(row)
            session.flush()
            created = ApiKey.of(row)
    except IntegrityError:
        raise ValueError(f"field 'name': a key named {name!r} exists already") from None
    return key, created


def list_keys(engine: Engine) -> list[ApiKey]:
    """Every key, revoked ones included, oldest first."""
    with Session(engine) as session:
        return [ApiKey.of(row) for row in session.scalars(
            select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id))]


def revoke_key(engine: Engine, name: str) -> ApiKey:
    """Revoke the key named `name` (LookupError when there is no such active key)."""
    with Session(engine) as session, session.begin():
        changed = session.execute(
            update(ApiKeyRow).where(ApiKeyRow.name == name, ApiKeyRow.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC)).returning(ApiKeyRow)).scalars().all()
        if not changed:
            raise LookupError(f"no active key named {name!r} (see `tailor keys list`)")
        return ApiKey.of(changed[0])


def find_key(engine: Engine, key: str) -> ApiKey | None:
    """The active key a client sent, None when unknown or revoked."""
    return find_key_by_hash(engine, hash_key(key))


def find_key_by_hash(engine: Engine, key_hash: str) -> ApiKey | None:
    """The active key whose SHA-256 (`hash_key`) is `key_hash`, None when unknown or revoked
    (a review page session remembers the hash, never the key)."""
    with Session(engine) as session:
        row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == key_hash,
                                                     ApiKeyRow.revoked_at.is_(None)))
        return None if row is None else ApiKey.of(row)


def create_demo_keys(engine: Engine) -> dict[str, str]:
    """On a database without any key: a merchandiser and a storefront key for the demo
    (`DEMO_KEYS`), returned by name; nothing (an empty dict) when keys exist already."""
    with Session(engine) as session:
        if session.scalar(select(ApiKeyRow.id).limit(1)) is not None:
            return {}
    return {name: create_key(engine, role, name)[0] for name, role in DEMO_KEYS}
