"""What every benchmark script shares: paths, the Redis URL, latency summaries, Feast keys."""

import os
import platform
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import redis
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from rich.table import Table
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
ONLINE_RETAIL_CSV = (
    ROOT.parent / "shared/datasets/online-retail/online_retail_2010-12-01_2011-09-30.csv.gz"
)
REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextmanager
def postgres_schema(prefix: str) -> Iterator[str]:
    """A fresh schema of the local PostgreSQL, dropped afterwards; yields a database URL
    whose search path is that schema."""
    admin = create_engine(POSTGRES_URL)
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def provenance() -> dict:
    """When, at which commit (with or without uncommitted changes) and on what a benchmark
    ran: the head of every results file."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()

    return {"when": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": git("rev-parse", "--short", "HEAD"),
            "worktree_dirty": bool(git("status", "--porcelain")),
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "load_average": os.getloadavg()}}


def summary(seconds: list[float], wall: float | None = None) -> dict[str, float]:
    """Percentiles of request durations (in milliseconds) and the rate: requests over the
    wall time when given (concurrent load), else one over the mean (sequential calls)."""
    ms = np.asarray(seconds) * 1000
    return {
        "n": len(ms), "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)), "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()), "max_ms": float(ms.max()),
        "per_second": float(len(ms) / wall if wall else 1000 / ms.mean()),
    }


LATENCY_COLUMNS = ("p50 ms", "p90 ms", "p99 ms", "req/s")


def latency_cells(row: dict[str, float]) -> list[str]:
    """A `summary` as table cells: percentiles in ms and the rate."""
    return [f"{row['p50_ms']:.2f}", f"{row['p90_ms']:.2f}", f"{row['p99_ms']:.2f}",
            f"{row['per_second']:.0f}"]


def latency_table(title: str, labels: tuple[str, str],
                  results: dict[str, dict[str, dict]]) -> Table:
    """A rich table of `summary` rows keyed by two labels (e.g. path, then store)."""
    table = Table(title=title)
    for column in (*labels, *LATENCY_COLUMNS):
        table.add_column(column, justify="left" if column in labels else "right")
    for first, rows in results.items():
        for second, row in rows.items():
            table.add_row(first, second, *latency_cells(row))
    return table


def latency_markdown(labels: tuple[str, str], results: dict[str, dict[str, dict]]) -> list[str]:
    """The same rows as a Markdown table, one line each."""
    lines = ["| " + " | ".join((*labels, *LATENCY_COLUMNS)) + " |", "|---|---|---:|---:|---:|---:|"]
    lines += ["| " + " | ".join((first, second, *latency_cells(row))) + " |"
              for first, rows in results.items() for second, row in rows.items()]
    return lines


def entity_key(**keys: str) -> EntityKey:
    """A Feast entity key of string join keys, in Feast's sorted order."""
    names = sorted(keys)
    return EntityKey(join_keys=names, entity_values=[Value(string_val=keys[n]) for n in names])


def delete_redis_project(project: str) -> None:
    """Remove every online-store key of a Feast project from the benchmark Redis."""
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"*{project}".encode(), count=1000):
        client.delete(key)
