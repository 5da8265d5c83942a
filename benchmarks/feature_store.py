"""Feature pipeline: batch jobs and online reads on the whole shared Online Retail export.

Measures, each repeated in fresh data directories, the import, the feature-table build and
materialization into SQLite and Redis; then online-read latency through Feast
(`get_online_features`) for one user, and for one user with 300 items (the recommender's
shape, on-demand recency included). Baseline, in the same run: the online store's raw read
of the same entity keys (`OnlineStore.online_read`). Target: import + build under 60 s.

Writes `benchmarks/results/features.json` and `features.md` (the name predates the module's).
Run from the repository root: python -m benchmarks.feature_store [--repeats 3]
[--requests 200] [--csv PATH]
"""

import argparse
import gc
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.common import (
    ONLINE_RETAIL_CSV,
    REDIS_URL,
    RESULTS_DIR,
    ROOT,
    delete_redis_project,
    entity_key,
    latency_markdown,
    latency_table,
    provenance,
    summary,
)
from features.event_log import EventLog
from features.ingest import import_online_retail, read_catalog
from features.settings import Settings
from features.store import apply_definitions, feature_store, materialize, online_features
from features.transforms import FEATURE_TABLES, build_feature_tables

RESULTS = RESULTS_DIR / "features.json"
BENCH_PROJECT = "tailor_bench"
MARKDOWN = RESULTS.with_suffix(".md")
IMPORT_AND_BUILD_TARGET_S = 60.0
ITEMS_PER_REQUEST = 300
WARM_UP_REQUESTS = 10
AS_OF = datetime(2011, 10, 1, tzinfo=UTC)
console = Console()


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def batch_jobs(csv: Path, repeats: int, workdir: Path) -> tuple[dict, Path]:
    """Time import, build and materialization; returns the timings and the last data dir."""
    timings: dict[str, list[float]] = {k: [] for k in
                                       ("import", "build", "materialize_sqlite",
                                        "materialize_redis")}
    for run in range(repeats):
        data_dir = workdir / f"run{run}"
        seconds, _ = timed(import_online_retail, csv, data_dir)
        timings["import"].append(seconds)
        catalog = read_catalog(data_dir / "catalog.parquet")
        seconds, _ = timed(build_feature_tables, data_dir / "events", catalog,
                           data_dir / "features")
        timings["build"].append(seconds)
        for backend in ("sqlite", "redis"):
            store = feature_store(backend_settings(data_dir, backend))
            apply_definitions(store)
            seconds, _ = timed(materialize, store, AS_OF)
            timings[f"materialize_{backend}"].append(seconds)
    rows = {name: {"median_s": statistics.median(values), "min_s": min(values),
                   "max_s": max(values), "runs": values} for name, values in timings.items()}
    totals = [a + b for a, b in zip(timings["import"], timings["build"], strict=True)]
    rows["import_plus_build"] = {"median_s": statistics.median(totals), "min_s": min(totals),
                                 "max_s": max(totals), "runs": totals,
                                 "target_s": IMPORT_AND_BUILD_TARGET_S}
    return rows, workdir / f"run{repeats - 1}"


def backend_settings(data_dir: Path, backend: str) -> Settings:
    redis_url = REDIS_URL if backend == "redis" else None
    # One registry per backend: each knows only what it materialized.
    return Settings(data_dir=data_dir, redis_url=redis_url, feast_project=BENCH_PROJECT)


def raw_read(store, views, user: str, items: list[str]) -> int:
    """The online store's own reads of the user, item and pair rows; returns rows found."""
    provider, config = store._get_provider(), store.config
    keys = {"user_stats": [entity_key(user_id=user)],
            "item_stats": [entity_key(item_id=i) for i in items],
            "user_item_stats": [entity_key(user_id=user, item_id=i) for i in items]}
    found = 0
    for view in views:
        rows = provider.online_read(config, view, keys[view.name])
        found += sum(values is not None for _, values in rows)
    return found


def feast_user_read(store, refs: list[str], user: str) -> dict:
    return store.get_online_features(features=refs, entity_rows=[{"user_id": user}]).to_dict()


def latency(data_dir: Path, requests: int, seed: int = 7) -> dict:
    """p50/p90/p99 of online reads per backend, Feast path and raw-store floor."""
    rng = random.Random(seed)
    events = EventLog(data_dir / "events").read()
    users = sorted(events["user_id"].dropna().unique())
    items = sorted(events["item_id"].unique())
    # A serving process holds no event log: millions of its strings would only slow the
    # garbage collector's full passes down and show up as latency spikes.
    del events
    gc.collect()
    results: dict[str, dict] = {}
    for backend in ("sqlite", "redis"):
        store = feature_store(backend_settings(data_dir, backend))
        views = [store.get_feature_view(name) for name in FEATURE_TABLES]
        user_refs = [f"user_stats:{f.name}" for f in views[0].features]
        cases: dict[str, list[float]] = {
            "1 user": [], "1 user + 300 items": [],
            "1 user (raw store read)": [], "1 user + 300 items (raw store read)": [],
        }
        for request in range(requests + WARM_UP_REQUESTS):
            user = rng.choice(users)
            chosen = rng.sample(items, ITEMS_PER_REQUEST)
            t_user, _ = timed(feast_user_read, store, user_refs, user)
            t_full, _ = timed(online_features, store, user, chosen, AS_OF)
            t_raw_user, _ = timed(raw_read, store, views[:1], user, [])
            t_raw_full, found = timed(raw_read, store, views, user, chosen)
            if found < 1 + ITEMS_PER_REQUEST:  # a miss would flatter the floor
                raise RuntimeError(f"raw read found only {found} rows: entity keys are wrong")
            if request >= WARM_UP_REQUESTS:
                for case, seconds in zip(cases, (t_user, t_full, t_raw_user, t_raw_full),
                                         strict=True):
                    cases[case].append(seconds)
        results[backend] = {case: summary(values) for case, values in cases.items()}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=ONLINE_RETAIL_CSV)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tailor-bench-") as workdir:
        try:
            batch, data_dir = batch_jobs(args.csv, args.repeats, Path(workdir))
            reads = latency(data_dir, args.requests)
        finally:
            delete_redis_project(BENCH_PROJECT)

    batch_table = Table(title=f"Batch jobs on the whole export ({args.repeats} runs)")
    for column in ("job", "median s", "min s", "max s"):
        batch_table.add_column(column, justify="right" if column != "job" else "left")
    for name, row in batch.items():
        batch_table.add_row(name, f"{row['median_s']:.1f}", f"{row['min_s']:.1f}",
                            f"{row['max_s']:.1f}")
    console.print(batch_table)
    met = batch["import_plus_build"]["median_s"] < IMPORT_AND_BUILD_TARGET_S
    verdict = "met" if met else "MISSED"
    console.print(f"import + build target < {IMPORT_AND_BUILD_TARGET_S:.0f} s: {verdict}")

    console.print(latency_table(
        f"Online reads ({args.requests} requests each, as of {AS_OF:%Y-%m-%d})",
        ("store", "read"), reads))

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "features", **provenance(),
        "batch": batch, "online_reads": reads,
    }, indent=2))
    MARKDOWN.write_text(markdown(batch, reads))
    console.print(f"wrote {RESULTS.relative_to(ROOT)} and {MARKDOWN.relative_to(ROOT)}")


def markdown(batch: dict, reads: dict) -> str:
    """The two result tables in Markdown, for the README."""
    lines = ["| job | median s | min s | max s |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {row['median_s']:.1f} | {row['min_s']:.1f} | {row['max_s']:.1f} |"
              for name, row in batch.items()]
    lines += ["", *latency_markdown(("store", "read"), reads)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
