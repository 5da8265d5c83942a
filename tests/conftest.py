import csv
import gzip
import itertools
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pandas as pd
import pytest
import redis

from features.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
ONLINE_RETAIL = (
    REPO_ROOT.parent / "shared/datasets/online-retail/online_retail_2010-12-01_2011-09-30.csv.gz"
)
REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SLICE_ROWS = 20_000


@pytest.fixture(scope="session")
def online_retail_rows() -> list[dict[str, str]]:
    """The first rows of the real Online Retail export (2010-12-01 to 2010-12-09)."""
    if not ONLINE_RETAIL.exists():
        pytest.fail(f"the shared Online Retail data set is missing: {ONLINE_RETAIL}")
    with gzip.open(ONLINE_RETAIL, "rt", newline="") as handle:
        return list(itertools.islice(csv.DictReader(handle), SLICE_ROWS))


@contextmanager
def postgres_schema(prefix: str) -> Iterator[str]:
    """A fresh schema of the real PostgreSQL, dropped afterwards; yields a database URL
    whose search path is that schema."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    admin = create_engine(POSTGRES_URL)
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except OperationalError as error:
        admin.dispose()
        pytest.fail(f"PostgreSQL does not answer at {POSTGRES_URL}: {error}")
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def service_settings(stack: ExitStack, kind: str, data_dir: Path, prefix: str) -> Settings:
    """Settings on an empty service database of `kind`: `sqlite`, the file of `data_dir`
    (made here), or `postgresql`, a fresh schema of the real PostgreSQL dropped when `stack`
    closes; a Feast project of their own."""
    database_url = (stack.enter_context(postgres_schema(prefix)) if kind == "postgresql"
                    else None)
    data_dir.mkdir(parents=True, exist_ok=True)
    return Settings(data_dir=data_dir, database_url=database_url,
                    feast_project=f"t{uuid.uuid4().hex[:8]}")


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, tmp_path):
    """An engine on an empty service database: a SQLite file, or a fresh schema of the real
    PostgreSQL, dropped afterwards."""
    from db import engine_for

    if request.param == "sqlite":
        engine = engine_for(f"sqlite:///{tmp_path / 'tailor.db'}")
        yield engine
        engine.dispose()
        return
    with postgres_schema(f"test_{request.node.module.__name__.rsplit('.', 1)[-1]}") as url:
        engine = engine_for(url)
        try:
            yield engine
        finally:
            engine.dispose()


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def online_retail_four_months(tmp_path_factory) -> Path:
    """A data directory holding the real export from 2010-12-01 to 2011-03-31, imported."""
    from features.ingest import import_online_retail

    if not ONLINE_RETAIL.exists():
        pytest.fail(f"the shared Online Retail data set is missing: {ONLINE_RETAIL}")
    with gzip.open(ONLINE_RETAIL, "rt", newline="") as handle:
        rows = list(itertools.takewhile(lambda r: r["InvoiceDate"] < "2011-04-01",
                                        csv.DictReader(handle)))
    folder = tmp_path_factory.mktemp("four-months")
    import_online_retail(write_csv(folder / "export.csv", rows), folder / "data")
    return folder / "data"


def features_ready(source: Path, data_dir: Path) -> Settings:
    """Settings on a copy of the data directory `source` at `data_dir`, with its feature
    tables built and the definitions applied (a fresh Feast project)."""
    from features.ingest import read_catalog
    from features.store import apply_definitions, feature_store
    from features.transforms import build_feature_tables

    shutil.copytree(source, data_dir)
    settings = Settings(data_dir=data_dir, feast_project=f"t{uuid.uuid4().hex[:8]}")
    build_feature_tables(settings.events_dir, read_catalog(settings.catalog_path),
                         settings.feature_tables_dir)
    apply_definitions(feature_store(settings))
    return settings


@pytest.fixture
def feature_ready_settings(tmp_path, online_retail_four_months) -> Settings:
    """Settings on a copy of the four-month slice with features built and applied."""
    return features_ready(online_retail_four_months, tmp_path / "data")


@pytest.fixture
def online_retail_slice(tmp_path, online_retail_rows) -> Path:
    return write_csv(tmp_path / "online_retail_slice.csv", online_retail_rows)


def event(event_id: str, ts: str, event_type: str = "purchase", user_id: str | None = "u1",
          item_id: str = "i1", quantity: int = 1, unit_price: float | None = 2.0,
          session_id: str | None = None) -> dict:
    """One canonical event row with test defaults."""
    return {
        "event_id": event_id, "event_type": event_type, "user_id": user_id,
        "session_id": session_id or f"s-{event_id}", "item_id": item_id,
        "ts": pd.Timestamp(ts, tz="UTC"), "quantity": quantity, "unit_price": unit_price,
        "currency": "GBP", "channel": "web",
    }


def catalog_row(item_id: str, category: str, price: float = 2.0) -> dict:
    return {"item_id": item_id, "title": f"Item {item_id}", "category": category,
            "unit_cost": None, "current_price": price, "currency": "GBP", "min_price": 0.5,
            "max_price": None}


def live_redis() -> redis.Redis:
    """A client of the shared Redis, or the test fails saying it does not answer."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail("Redis does not answer on 127.0.0.1:6379 (make test starts it)")
    return client


@pytest.fixture(params=["sqlite", "redis"])
def store_settings(request, tmp_path) -> Settings:
    """Settings for each online store backend; the Redis one is the real server."""
    project = f"t{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        yield Settings(data_dir=tmp_path / "data", feast_project=project)
        return
    client = live_redis()
    settings = Settings(data_dir=tmp_path / "data", redis_url=REDIS_URL, feast_project=project)
    yield settings
    delete_project_keys(client, project)


def delete_project_keys(client, project: str) -> None:
    """Delete a Feast project's keys and tailor's own (stream, change notices, results)."""
    for pattern in (f"*{project}", f"tailor:{project}:*"):
        for key in client.scan_iter(match=pattern.encode(), count=1000):
            client.delete(key)


# Item i1 (kitchen): u1 buys on Jan 1 and Jan 3, u2 buys on Jan 1 and returns on Jan 5, a guest
# buys on Jan 20. Item i2 (toys): u1 buys 3 in the same order as i1 on Jan 3.
SAMPLE_EVENTS = [
    event("e1", "2011-01-01 09:00", user_id="u1", item_id="i1", quantity=2, unit_price=2.0,
          session_id="s1"),
    event("e2", "2011-01-01 15:00", user_id="u2", item_id="i1", quantity=1, unit_price=3.0,
          session_id="s2"),
    event("e3", "2011-01-03 10:00", user_id="u1", item_id="i1", quantity=1, unit_price=4.0,
          session_id="s3"),
    event("e4", "2011-01-03 10:00", user_id="u1", item_id="i2", quantity=3, unit_price=1.0,
          session_id="s3"),
    event("e5", "2011-01-05 11:00", "return", user_id="u2", item_id="i1", quantity=1,
          unit_price=3.0, session_id="s4"),
    event("e6", "2011-01-20 12:00", user_id=None, item_id="i1", quantity=1, unit_price=2.0,
          session_id="s5"),
    event("e7", "2011-01-04 12:00", "view", user_id="u1", item_id="i2", unit_price=None),
]
SAMPLE_CATALOG = pd.DataFrame([catalog_row("i1", "kitchen"), catalog_row("i2", "toys")])


def key_headers(settings: Settings, role: str, name: str | None = None) -> dict[str, str]:
    """The `Authorization` header of a new API key with `role` (and `name`) in the settings'
    service database (migrated first; the embedded SQLite file's folder is made)."""
    from db import service_database
    from db.keys import create_key

    with service_database(settings) as engine:
        key, _ = create_key(engine, role, name)
    return {"Authorization": f"Bearer {key}"}


class PrivateRedis:
    """A Redis server of a test's own (same binary as the shared one, append-only file on,
    fsync on every write), which the test may stop and start again without touching the
    shared server."""

    def __init__(self, folder: Path):
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.folder = folder
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        import time

        server = shutil.which("redis-server")
        if server is None:
            pytest.fail("redis-server is not installed (make test needs Redis)")
        self.process = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        pytest.fail(f"a private Redis did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateRedis]:
    """A running `PrivateRedis`, stopped after the test."""
    server = PrivateRedis(tmp_path / "redis")
    server.folder.mkdir()
    server.start()
    yield server
    server.stop()
