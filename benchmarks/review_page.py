"""Latency of the review page (`/review`) with 10,000 pending suggestions, SQLite and PostgreSQL.

The page pages in the database (LIMIT/OFFSET after the filters and the sort), so its cost
should barely depend on how many suggestions wait. Measured in process (TestClient, so the
templates' rendering counts) for the first page, the last page and a filtered page sorted by
expected gain, at 10,000 suggestions and, as the baseline in the same run, at 500; the JSON
listing of the API (same page size) is measured beside it. The planner's statistics are
fresh (ANALYZE after loading, as PostgreSQL's autovacuum keeps them in service). Targets:
every page's p99 at 10,000 suggestions <= 150 ms, and its p50 at most 3x the 500-suggestion
baseline's.

Writes `benchmarks/results/review_page.json` and `.md`.
Run from the repository root: python -m benchmarks.review_page [--repeats 40]
"""

import argparse
import json
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from fastapi.testclient import TestClient
from rich.console import Console
from sqlalchemy import text

import db
from benchmarks.common import (
    RESULTS_DIR,
    latency_markdown,
    latency_table,
    postgres_schema,
    provenance,
    summary,
)
from db.keys import create_key
from db.suggestions import save_batch
from features.settings import Settings
from models.pricing.guardrails import Guardrails
from models.pricing.optimizer import optimize_prices
from serving.app import create_app
from serving.config import ServingSettings

RESULTS = RESULTS_DIR / "review_page.json"
MARKDOWN = RESULTS_DIR / "review_page.md"
SIZES = (500, 10_000)
CHANNELS = ("web", "etsy", "amazon", "shopify")
CATEGORIES = ("sewing", "knitting", "quilting", "surface design", "embroidery")
FEES = {"web": (2.9, 0.3), "etsy": (6.5, 0.2), "amazon": (15.0, 0.0), "shopify": (2.9, 0.3)}
TARGET_P99_MS = 150.0
TARGET_GROWTH = 3.0
console = Console()


def suggestions(count: int, seed: int) -> tuple[pd.DataFrame, dict[str, str]]:
    """`count` optimizer suggestions (items x the four channels) and the items' categories."""
    items = count // len(CHANNELS)
    offers = pd.DataFrame([{
        "item_id": f"i{number:05d}", "channel": channel, "unit_cost": 1.0 + number % 7,
        "fee_percent": FEES[channel][0], "fee_fixed": FEES[channel][1],
        "current_price": 6.99 + (number * 7 + seed) % 30, "min_price": 0.5, "max_price": 200.0,
        "observed_min_price": 5.0, "observed_max_price": 40.0,
        "reference_price": 15.0 + number % 11, "elasticity": 0.8 + (number % 13) / 6,
    } for number in range(items) for channel in CHANNELS])

    def demand(rows: pd.DataFrame, prices):
        reference = rows["reference_price"].to_numpy()
        return 3.0 * (prices / reference) ** -rows["elasticity"].to_numpy()

    result = optimize_prices(offers, demand, Guardrails(), "demand-model:1")
    categories = {f"i{number:05d}": CATEGORIES[number % len(CATEGORIES)]
                  for number in range(items)}
    return result.suggestions, categories


@contextmanager
def database(kind: str, data_dir: Path) -> Iterator[Settings]:
    """Settings of a fresh service database: a SQLite file, or a PostgreSQL schema."""
    if kind == "sqlite":
        yield Settings(data_dir=data_dir, feast_project=f"b{uuid.uuid4().hex[:8]}")
        return
    with postgres_schema("bench_review") as url:
        yield Settings(data_dir=data_dir, feast_project=f"b{uuid.uuid4().hex[:8]}",
                       database_url=url)


def logged_in(client: TestClient, key: str) -> None:
    form = client.get("/review/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)[1]  # type: ignore[index]
    response = client.post("/review/login", data={"key": key, "csrf_token": token},
                           follow_redirects=False)
    assert response.status_code == 303, response.text


def timed(client: TestClient, url: str, repeats: int, headers: dict | None = None) -> dict:
    durations = []
    for _ in range(repeats + 3):
        start = time.perf_counter()
        response = client.get(url, headers=headers)
        durations.append(time.perf_counter() - start)
        assert response.status_code == 200, (url, response.status_code, response.text[:300])
    return summary(durations[3:])


def measure(kind: str, size: int, repeats: int, work: Path) -> dict[str, dict]:
    frame, categories = suggestions(size, seed=size)
    with database(kind, work / f"{kind}-{size}") as settings:
        with db.service_database(settings) as engine:
            save_batch(engine, frame, None, "demand-model:1",
                       Guardrails().model_dump(mode="json"), categories)
            key, _ = create_key(engine, "merchandiser", "bench")
            with engine.begin() as connection:  # the statistics autovacuum keeps in service
                connection.execute(text("ANALYZE"))
        pages = -(-size // 50)
        urls = {"first page": "/review",
                "last page": f"/review?page={pages}",
                "etsy, sewing, by gain": "/review?channel=etsy&category=sewing&sort=gain_desc",
                "API list (JSON)": "/v1/price-suggestions?limit=50"}
        with TestClient(create_app(settings, ServingSettings())) as client:
            logged_in(client, key)
            headers = {"Authorization": f"Bearer {key}"}
            return {name: timed(client, url, repeats,
                                headers if url.startswith("/v1") else None)
                    for name, url in urls.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    results: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory() as work:
        for kind in ("sqlite", "postgresql"):
            for size in SIZES:
                console.print(f"[bold]{kind}[/], {size:,} suggestions")
                for page, row in measure(kind, size, args.repeats, Path(work)).items():
                    results.setdefault(f"{page}", {})[f"{kind}, {size:,}"] = row
    checks = {}
    for page, rows in results.items():
        for kind in ("sqlite", "postgresql"):
            large, small = rows[f"{kind}, {SIZES[1]:,}"], rows[f"{kind}, {SIZES[0]:,}"]
            checks[f"{page}, {kind}"] = {
                "p99_ms": large["p99_ms"], "growth_p50": large["p50_ms"] / small["p50_ms"],
                "met": large["p99_ms"] <= TARGET_P99_MS
                and large["p50_ms"] <= TARGET_GROWTH * small["p50_ms"]}
    table = latency_table("Review page latency (in process)", ("page", "store, suggestions"),
                          results)
    console.print(table)
    for name, check in checks.items():
        console.print(f"{name}: p99 {check['p99_ms']:.1f} ms, p50 x{check['growth_p50']:.2f} "
                      f"of 500 -> {'met' if check['met'] else 'MISSED'}")
    RESULTS.write_text(json.dumps({
        **provenance(), "repeats": args.repeats, "sizes": SIZES,
        "targets": {"p99_ms_at_10000": TARGET_P99_MS, "p50_growth_10000_over_500": TARGET_GROWTH},
        "results": results, "checks": checks}, indent=2) + "\n")
    MARKDOWN.write_text("\n".join([
        "# Review page latency", "",
        f"In process (TestClient), {args.repeats} requests per row; page size 50. Targets: "
        f"p99 <= {TARGET_P99_MS:g} ms at 10,000 suggestions, p50 at most "
        f"{TARGET_GROWTH:g}x the 500-suggestion baseline's.", "",
        *latency_markdown(("page", "store, suggestions"), results), "",
        "| page, store | p99 ms at 10,000 | p50 growth over 500 | met |", "|---|---:|---:|---|",
        *[f"| {name} | {check['p99_ms']:.1f} | {check['growth_p50']:.2f} | "
          f"{'yes' if check['met'] else 'no'} |" for name, check in checks.items()], ""]))
    console.print(f"wrote {RESULTS} and {MARKDOWN}")


if __name__ == "__main__":
    main()
