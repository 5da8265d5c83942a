"""Real-time ingestion: events per second from HTTP batches through the stream into the log and
the online features, and event-to-online-feature freshness, on SQLite (embedded) and Redis.

Sets up a data directory (the first months of the shared export imported, features built,
applied and materialized), then per backend starts uvicorn (1 worker) and one consumer
(`tailor events consume`) as subprocesses, and a load generator in this process posts
batches of `--batch` synthetic shopper events (real users and items of the export, ts now)
over `--concurrency` keep-alive connections. All three share this machine's cores.
- accepted/s: events answered 202, over the wall time of the posting;
- sustained/s: events over the time from the first post until the consumer has written the
  last one to the log and the online store (the stream's backlog empty);
- freshness: a marker purchase of a user posted alone, then the online store polled every
  2 ms until the user's `user_last_purchase_ts` is the marker's: p50/p99 with the service
  idle, and under a load paced at `--paced-share` of the sustained rate (above the sustained
  rate the backlog grows and freshness is the backlog's age, by construction).
The mix: `--purchase-share` purchases (default 5%, a storefront's views-to-orders order of
magnitude), the rest views; purchases are what touches the online features.
Baseline in the same run: the batch path the product had before the stream (the same events
as a file: import, feature build, materialize), its events/s and time to the online store.
Targets (issue #17): >= 20,000 events/s sustained on Redis; freshness p99 <= 1 s.

Writes `benchmarks/results/ingest.json` and `.md`.
Run from the repository root: python -m benchmarks.ingest [--events 100000] [--batch 1000]
[--concurrency 4] [--markers 60] [--months 2] [--purchase-share 0.05] [--paced-events 40000]
[--paced-share 0.5]
"""

import argparse
import asyncio
import csv
import gzip
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from benchmarks.common import (
    ONLINE_RETAIL_CSV,
    REDIS_URL,
    RESULTS_DIR,
    ROOT,
    delete_redis_project,
    provenance,
)
from benchmarks.serving import free_port, storefront_headers
from features.event_log import EventLog
from features.ingest import import_events_file, import_online_retail, read_catalog
from features.online import ServiceReader
from features.settings import Settings
from features.store import apply_definitions, feature_store, materialize
from features.stream import open_stream
from features.transforms import build_feature_tables

console = Console()
BACKENDS = ("sqlite", "redis")
SUSTAINED_TARGET = 20_000
FRESHNESS_P99_TARGET_S = 1.0
READY_TIMEOUT_S = 300.0
USER_VIEW = "user_stats"


def step(message: str) -> None:
    console.print(f"[dim]{datetime.now():%H:%M:%S}[/] {message}")


def backend_settings(data_dir: Path, backend: str, project: str) -> Settings:
    settings = Settings(data_dir=data_dir, feast_project=project,
                        redis_url=REDIS_URL if backend == "redis" else None)
    return settings.model_copy(update={"mlflow_tracking_uri": None, "database_url": None})


def environment(settings: Settings) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("TAILOR_") and name != "MLFLOW_TRACKING_URI"}
    env.update(TAILOR_DATA_DIR=str(settings.data_dir), TAILOR_FEAST_PROJECT=settings.feast_project,
               PYTHONPATH=str(ROOT))
    if settings.redis_url:
        env["TAILOR_REDIS_URL"] = settings.redis_url
    return env


def prepare(months: int, workdir: Path, backend: str) -> Settings:
    """A data directory with the export's first `months` imported, built, materialized."""
    data_dir = workdir / backend / "data"
    end = f"2011-{months:02d}-01" if months < 13 else "2011-10-01"
    with gzip.open(ONLINE_RETAIL_CSV, "rt", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(itertools.takewhile(lambda r: r["InvoiceDate"] < end, reader))
    export = workdir / f"export-{backend}.csv"
    with open(export, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    import_online_retail(export, data_dir)
    settings = backend_settings(data_dir, backend, f"ingest{uuid.uuid4().hex[:8]}")
    build_feature_tables(settings.events_dir, read_catalog(settings.catalog_path),
                         settings.feature_tables_dir)
    store = feature_store(settings)
    apply_definitions(store)
    materialize(store)
    return settings


def synthetic_events(settings: Settings, n: int, seed: int,
                     purchase_share: float) -> list[dict]:
    """`n` shopper events of the export's users and items, ts now, `purchase_share` of them
    purchases and the rest views."""
    history = EventLog(settings.events_dir).read()
    bought = history[(history["event_type"] == "purchase") & history["user_id"].notna()]
    rng = np.random.default_rng(seed)
    users = rng.choice(bought["user_id"].unique(), n)
    rows = bought.sample(n, replace=True, random_state=seed)
    purchase = rng.random(n) < purchase_share
    now = datetime.now(UTC).isoformat()
    run = uuid.uuid4().hex[:8]
    return [{"event_id": f"load-{run}-{i}", "event_type": "purchase" if purchase[i] else "view",
             "user_id": str(users[i]), "session_id": f"load-{run}-{users[i]}",
             "item_id": str(item), "ts": now, "quantity": 1,
             **({"unit_price": float(price)} if purchase[i] else {}),
             "currency": "GBP", "channel": "web"}
            for i, (item, price) in enumerate(zip(rows["item_id"], rows["unit_price"],
                                                  strict=True))]


def start(command: list[str], settings: Settings, log: Path) -> subprocess.Popen:
    with open(log, "wb") as output:
        return subprocess.Popen(command, cwd=settings.data_dir.parent, env=environment(settings),
                                stdout=output, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def wait_ready(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"uvicorn not up after {READY_TIMEOUT_S:.0f} s")


async def post_all(port: int, headers: dict, batches: list[list[dict]], concurrency: int,
                   rate: float | None = None) -> float:
    """Post every batch, `concurrency` at a time (at most `rate` events/s when given); the
    wall time in seconds."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers,
                                 limits=limits, timeout=60) as client:
        queue = iter(enumerate(batches))
        started = time.perf_counter()

        async def worker() -> None:
            for number, batch in queue:
                if rate is not None:
                    due = started + number * len(batch) / rate
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                response = await client.post("/v1/events", json=batch)
                if response.status_code != 202:
                    raise RuntimeError(f"{response.status_code}: {response.text[:500]}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


class Freshness:
    """Marker purchases posted one at a time; seconds from 202 to the online store."""

    def __init__(self, settings: Settings, port: int, headers: dict, users: list[str]):
        self.reader = ServiceReader(feature_store(settings), "recs_ranker_v1")
        self.url = f"http://127.0.0.1:{port}/v1/events"
        self.headers = headers
        self.users = users
        self.seconds: list[float] = []

    def last_purchase(self, user: str) -> pd.Timestamp | None:
        columns = self.reader.read_columns({"user_id": user, "item_id": ["none"]},
                                           {"as_of": datetime.now(UTC)}, skip=("item_stats",))
        value = columns["user_last_purchase_ts"][0]
        return None if pd.isna(value) else pd.Timestamp(value, tz=UTC)

    def run(self, n: int, stop: threading.Event | None = None, record: bool = True) -> None:
        with httpx.Client(headers=self.headers, timeout=30) as client:
            for user in itertools.islice(itertools.cycle(self.users), n):
                if stop is not None and stop.is_set():
                    return
                marker = pd.Timestamp.now(tz=UTC).floor("s")  # the store keeps whole seconds
                event = {"event_id": f"marker-{uuid.uuid4().hex}", "event_type": "purchase",
                         "user_id": user, "session_id": f"marker-{uuid.uuid4().hex[:8]}",
                         "item_id": "85123A", "ts": marker.isoformat(), "quantity": 1,
                         "unit_price": 2.55, "currency": "GBP", "channel": "web"}
                response = client.post(self.url, json=event)
                if response.status_code != 202:
                    raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
                accepted = time.perf_counter()
                while True:
                    seen = self.last_purchase(user)
                    if seen is not None and seen >= marker:
                        if record:
                            self.seconds.append(time.perf_counter() - accepted)
                        break
                    if time.perf_counter() - accepted > READY_TIMEOUT_S:
                        raise RuntimeError(f"marker of {user} not online after "
                                           f"{READY_TIMEOUT_S:.0f} s")
                    time.sleep(0.002)


def percentiles(seconds: list[float]) -> dict[str, float]:
    values = np.asarray(seconds)
    return {"n": len(values), "p50_s": float(np.percentile(values, 50)),
            "p90_s": float(np.percentile(values, 90)),
            "p99_s": float(np.percentile(values, 99)), "max_s": float(values.max())}


def wait_drained(settings: Settings, deadline_s: float) -> float:
    """Until the stream's backlog is empty; the time it happened (perf_counter)."""
    stream = open_stream(settings)
    try:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if stream.backlog() == 0:
                return time.perf_counter()
            time.sleep(0.01)
    finally:
        stream.close()
    raise RuntimeError("the consumer did not drain the stream in time")


def measure_backend(backend: str, args, workdir: Path) -> dict:
    step(f"[bold]{backend}[/]: preparing {args.months} months of the export")
    settings = prepare(args.months, workdir, backend)
    events = synthetic_events(settings, args.events, args.seed, args.purchase_share)
    batches = [events[i:i + args.batch] for i in range(0, len(events), args.batch)]
    paced = synthetic_events(settings, args.paced_events, args.seed + 1, args.purchase_share)
    paced_batches = [paced[i:i + args.batch] for i in range(0, len(paced), args.batch)]
    users = sorted({e["user_id"] for e in events})[: args.markers]
    headers = storefront_headers(settings)
    port = free_port()
    logs = workdir / backend
    server = start([sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory",
                    "--port", str(port), "--no-access-log", "--log-level", "warning"],
                   settings, logs / "uvicorn.log")
    consumer = start([str(Path(sys.executable).with_name("tailor")), "events", "consume"],
                     settings, logs / "consumer.log")
    try:
        wait_ready(port, server, logs / "uvicorn.log")
        fresh = Freshness(settings, port, headers, users)
        step("  waiting for the consumer (one marker through)")
        fresh.run(1, record=False)
        step("  freshness, service idle")
        fresh.run(args.markers)
        idle = percentiles(fresh.seconds)
        step(f"  throughput: {len(events):,} events in batches of {args.batch}, "
             f"concurrency {args.concurrency}, as fast as they are accepted")
        started = time.perf_counter()
        posting = asyncio.run(post_all(port, headers, batches, args.concurrency))
        drained = wait_drained(settings, 600)
        sustained = len(events) / (drained - started)
        rate = args.paced_share * sustained
        step(f"  freshness under load: {len(paced):,} events paced at {rate:,.0f}/s "
             f"({args.paced_share:.0%} of the sustained rate), markers alongside")
        fresh.seconds = []
        stop_markers = threading.Event()
        markers = threading.Thread(target=fresh.run, args=(10 * args.markers, stop_markers))
        markers.start()
        asyncio.run(post_all(port, headers, paced_batches, args.concurrency, rate))
        wait_drained(settings, 600)
        stop_markers.set()
        markers.join()
        loaded = percentiles(fresh.seconds)
    finally:
        stop(consumer)
        stop(server)
    stored = EventLog(settings.events_dir).read(start=pd.Timestamp(events[0]["ts"]))
    written = int(stored["event_id"].str.startswith("load-").sum())
    if written != len(events) + len(paced):
        raise RuntimeError(f"{written} of {len(events) + len(paced)} load events reached "
                           "the log")
    result = {"events": len(events), "accepted_per_s": len(events) / posting,
              "sustained_per_s": sustained, "paced_per_s": rate,
              "freshness_idle": idle, "freshness_under_load": loaded}
    if backend == "redis":
        delete_redis_project(settings.feast_project)
    return result


def batch_baseline(args, workdir: Path) -> dict:
    """The batch path: the same number of events as a file, imported, built, materialized."""
    step("[bold]baseline[/]: the batch path (file import, feature build, materialize)")
    settings = prepare(args.months, workdir, "baseline")
    events = pd.DataFrame(synthetic_events(settings, args.events, args.seed,
                                           args.purchase_share))
    path = workdir / "events.parquet"
    events.to_parquet(path, index=False)
    started = time.perf_counter()
    import_events_file(path, settings.events_dir)
    build_feature_tables(settings.events_dir, read_catalog(settings.catalog_path),
                         settings.feature_tables_dir)
    materialize(feature_store(settings), datetime.now(UTC) + pd.Timedelta(days=1))
    seconds = time.perf_counter() - started
    return {"events": len(events), "seconds_to_online": seconds,
            "per_s": len(events) / seconds}


def report(results: dict, baseline: dict, args) -> tuple[Table, list[str]]:
    table = Table(title=f"Ingestion: {args.events:,} events ({args.purchase_share:.0%} "
                        f"purchases), batches of {args.batch}, concurrency {args.concurrency}")
    columns = ("path", "accepted/s", "sustained/s", "fresh p50 idle s", "fresh p99 idle s",
               "paced load/s", "fresh p50 load s", "fresh p99 load s")
    for column in columns:
        table.add_column(column, justify="left" if column == "path" else "right")
    lines = ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]
    for backend, row in results.items():
        load = row["freshness_under_load"]
        cells = [f"stream, {backend}", f"{row['accepted_per_s']:,.0f}",
                 f"{row['sustained_per_s']:,.0f}", f"{row['freshness_idle']['p50_s']:.3f}",
                 f"{row['freshness_idle']['p99_s']:.3f}", f"{row['paced_per_s']:,.0f}",
                 f"{load['p50_s']:.3f}", f"{load['p99_s']:.3f}"]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["baseline: file import + build + materialize (sqlite)", "-",
             f"{baseline['per_s']:,.0f}", f"{baseline['seconds_to_online']:.1f}", "-", "-", "-",
             "-"]
    table.add_row(*cells)
    lines.append("| " + " | ".join(cells) + " |")
    return table, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--markers", type=int, default=60)
    parser.add_argument("--purchase-share", type=float, default=0.05,
                        help="share of purchases among the events (the rest are views)")
    parser.add_argument("--paced-events", type=int, default=40_000)
    parser.add_argument("--paced-share", type=float, default=0.5,
                        help="the paced load's rate as a share of the sustained rate")
    parser.add_argument("--months", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="tailor-ingest-") as folder:
        workdir = Path(folder)
        for backend in (*BACKENDS, "baseline"):
            (workdir / backend).mkdir()
        results = {backend: measure_backend(backend, args, workdir) for backend in BACKENDS}
        baseline = batch_baseline(args, workdir)
    redis_row = results["redis"]
    goal = {"sustained_target_per_s": SUSTAINED_TARGET,
            "redis_sustained_per_s": redis_row["sustained_per_s"],
            "sustained_target_met": redis_row["sustained_per_s"] >= SUSTAINED_TARGET,
            "freshness_p99_target_s": FRESHNESS_P99_TARGET_S,
            "freshness_p99_target_met": all(
                row[phase]["p99_s"] <= FRESHNESS_P99_TARGET_S for row in results.values()
                for phase in ("freshness_idle", "freshness_under_load"))}
    table, lines = report(results, baseline, args)
    console.print(table)
    verdict = (f"Redis sustained {redis_row['sustained_per_s']:,.0f} events/s, target >= "
               f"{SUSTAINED_TARGET:,}: {'met' if goal['sustained_target_met'] else 'MISSED'}; "
               f"freshness p99 <= {FRESHNESS_P99_TARGET_S:.0f} s idle and under load: "
               f"{'met' if goal['freshness_p99_target_met'] else 'MISSED'}")
    console.print(verdict)
    payload = {**provenance(), "load_average_before": load_before, "args": vars(args),
               "results": results, "baseline": baseline, "goal": goal}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "ingest.json").write_text(json.dumps(payload, indent=2) + "\n")
    note = (f"{os.cpu_count()} CPUs shared by the load generator, uvicorn (1 worker) and one "
            "consumer; freshness: a marker purchase's 202 to the online store.")
    (RESULTS_DIR / "ingest.md").write_text("\n".join([note, "", *lines, "", verdict]) + "\n")


if __name__ == "__main__":
    main()
