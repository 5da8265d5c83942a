"""What the service tells its operators: Prometheus metrics, structured logs and traces.

Metrics (served at `GET /metrics`, `prometheus_client`), all prefixed `tailor_`:

| series | type | labels |
|---|---|---|
| `http_request_duration_seconds` | histogram | `method`, `route` (the template) |
| `http_responses_total` | counter | `method`, `route`, `status` |
| `http_exceptions_total` | counter | `method`, `route`, `exception` (answered 500) |
| `recommendations_total` | counter | `fallback` (`true`, `false`) |
| `model_version` | gauge | `version`: 1 per worker serving it (`none`: no model) |
| `feature_store_read_seconds` | histogram | `read`: `user`, `request_features`, `item_features` |
| `result_cache_lookups_total` | counter | `outcome` (`hit`, `shared`, `miss`) |

Cache outcomes: `hit` in process, `shared` another worker's list through Redis, `miss` scored.
Fallback rate: `sum(rate(tailor_recommendations_total{fallback="true"}[5m])) /
sum(rate(tailor_recommendations_total[5m]))`; the cache hit ratio likewise from `outcome`.

Several workers: with `PROMETHEUS_MULTIPROC_DIR` set (before the workers start) every
worker writes its values there and any worker's `/metrics` answers for all of them
(`prometheus_client` multiprocess mode); `run_metrics_dir` sets it up for `tailor serve`.
Feast sets the variable to a temporary directory of its own when it is unset (on import), so
a single process usually runs in multiprocess mode too; a worker's live gauges are dropped
when its process exits.

`TAILOR_SERVING_METRICS=false` turns recording off in the worker (`set_metrics`: every
`record_*` a no-op, `/metrics` answers 404): what the serving benchmark compares against to
measure the metrics' cost.

The request path records through `record_cache(outcome)`, `store_read(read)` (a context manager
timing one feature-store read) and `span(name)` (a child span of the request's, a shared
no-op when tracing is off). Logs: `log_config(format)`, `text` or one JSON object per line
with the request's id (`REQUEST_ID`, set by `serving.middleware`). Traces: `start_tracing`
with an exporter from `span_exporter` (`none`, `console`, `otlp`).
"""

import atexit
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from time import perf_counter
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind, Tracer
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from serving.config import LogFormat, TraceExporter

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
MULTIPROCESS = bool(os.environ.get(MULTIPROC_DIR))
"""Read once, as `prometheus_client` does when it is imported."""
UNMATCHED = "unmatched"
"""The `route` of a request no route matched (never the raw path: ids are unbounded)."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                 0.25, 1.0, 2.5)

REQUEST_SECONDS = Histogram("tailor_http_request_duration_seconds",
                            "Time to answer an HTTP request, by route template",
                            ["method", "route"], buckets=LATENCY_BUCKETS)
RESPONSES = Counter("tailor_http_responses", "HTTP responses by route template and status",
                    ["method", "route", "status"])
EXCEPTIONS = Counter("tailor_http_exceptions", "Requests that raised (answered 500)",
                     ["method", "route", "exception"])
RECOMMENDATIONS = Counter("tailor_recommendations",
                          "Recommendation responses; fallback=true: the popularity fallback",
                          ["fallback"])
MODEL_VERSION = Gauge("tailor_model_version", "Workers serving this recs-ranker version",
                      ["version"], multiprocess_mode="livesum")
STORE_READ_SECONDS = Histogram("tailor_feature_store_read_seconds",
                               "Time of one online feature-store read (lock wait included)",
                               ["read"], buckets=STORE_BUCKETS)
RESULT_CACHE = Counter("tailor_result_cache_lookups",
                       "Lookups of a user's ranked list in the result cache", ["outcome"])

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The id of the request being answered (None outside one)."""

_FALLBACK = {True: RECOMMENDATIONS.labels("true"), False: RECOMMENDATIONS.labels("false")}
CACHE_OUTCOMES = ("hit", "shared", "miss")
_CACHE = {outcome: RESULT_CACHE.labels(outcome) for outcome in CACHE_OUTCOMES}
_STORE_READS = {read: (STORE_READ_SECONDS.labels(read), f"store.{read}")
                for read in ("user", "request_features", "item_features")}
_OFF: AbstractContextManager[None] = nullcontext()
_recording = True
_tracing: tuple[TracerProvider, Tracer] | None = None
_version_lock = threading.Lock()
_version: str | None = None


# Metrics -------------------------------------------------------------------------------

def set_metrics(enabled: bool) -> None:
    """Record metrics in this process (the default), or not (`record_*` do nothing)."""
    global _recording
    _recording = enabled


def metrics_enabled() -> bool:
    return _recording


def record_cache(outcome: str) -> None:
    """Count one result-cache lookup by its outcome (one of `CACHE_OUTCOMES`)."""
    if _recording:
        _CACHE[outcome].inc()


@contextmanager
def store_read(read: str) -> Iterator[None]:
    """Time one online feature-store read (`user`, `request_features`, `item_features`) into
    `tailor_feature_store_read_seconds`, inside a `store.<read>` span when tracing."""
    histogram, name = _STORE_READS[read]
    with span(name):
        start = perf_counter()
        try:
            yield
        finally:
            if _recording:
                histogram.observe(perf_counter() - start)


def record_recommendation(fallback: bool, model_version: str | None) -> None:
    """Count one recommendations response and the version that answered it."""
    if not _recording:
        return
    _FALLBACK[fallback].inc()
    record_model_version(model_version)


def record_model_version(version: str | None) -> None:
    """This worker serves `version` (None: no model): its series 1, the previous one 0."""
    global _version
    label = version or "none"
    if label == _version or not _recording:
        return
    with _version_lock:
        if label == _version:
            return
        if _version is not None:
            MODEL_VERSION.labels(_version).set(0)
        MODEL_VERSION.labels(label).set(1)
        _version = label


@cache
def _http_series(method: str, route: str, status: int) -> tuple[Histogram, Counter]:
    return REQUEST_SECONDS.labels(method, route), RESPONSES.labels(method, route, str(status))


def record_request(method: str, route: str, status: int, seconds: float,
                   error: BaseException | None = None) -> None:
    """Count one answered request (`error`: what it raised)."""
    if not _recording:
        return
    method = method if method in METHODS else "OTHER"
    latency, responses = _http_series(method, route, status)
    latency.observe(seconds)
    responses.inc()
    if error is not None:
        EXCEPTIONS.labels(method, route, type(error).__name__).inc()


def exposition(accept: str | None) -> tuple[bytes, str]:
    """The metrics in the format `accept` asks for (Prometheus text by default), with its
    content type; every worker's in multiprocess mode."""
    registry = REGISTRY
    if MULTIPROCESS:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


@contextmanager
def run_metrics_dir(workers: int) -> Iterator[None]:
    """Around a server run, before its workers start: empty `PROMETHEUS_MULTIPROC_DIR` of a
    previous run's files, or give several workers a temporary one when it is unset."""
    directory = os.environ.get(MULTIPROC_DIR)
    if directory:
        for stale in Path(directory).glob("*.db"):
            stale.unlink()
        yield
    elif workers > 1:
        with tempfile.TemporaryDirectory(prefix="tailor-metrics-") as temporary:
            os.environ[MULTIPROC_DIR] = temporary
            try:
                yield
            finally:
                del os.environ[MULTIPROC_DIR]
    else:
        yield


def worker_exit() -> None:
    """Flush this worker's traces. (Its live gauges go when the process exits: dropping
    them here would leave an app started again in this process without them.)"""
    stop_tracing()


def _drop_live_gauges() -> None:
    mark_process_dead(os.getpid())


if MULTIPROCESS:
    atexit.register(_drop_live_gauges)


# Logs ----------------------------------------------------------------------------------

class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, the request's id inside
    a request, the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(
                     timespec="milliseconds"),
                 "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger: message`, then `[request_id]` inside a request."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = REQUEST_ID.get()
        return line if request_id is None else f"{line} [{request_id}]"


def log_config(log_format: LogFormat) -> dict[str, Any]:
    """A `logging.config.dictConfig` (uvicorn's `log_config`): every logger, uvicorn's and
    MLflow's included, at INFO to stderr in `log_format`."""
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"default": {"()": f"{__name__}.{formatter.__name__}"}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default",
                                 "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["default"], "level": "INFO"},
        "loggers": {name: {"handlers": [], "level": "INFO", "propagate": True}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "mlflow")},
    }


# Traces --------------------------------------------------------------------------------

def span_exporter(kind: TraceExporter) -> SpanExporter | None:
    """The exporter of `TAILOR_SERVING_TRACE_EXPORTER` (None: tracing off). `otlp` sends
    OTLP over HTTP to `OTEL_EXPORTER_OTLP_ENDPOINT` (default http://localhost:4318)."""
    if kind == "console":
        return ConsoleSpanExporter()
    if kind == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    return None


def start_tracing(exporter: SpanExporter | None) -> None:
    """Trace requests into `exporter`, in batches (None: off). The sampler follows
    `OTEL_TRACES_SAMPLER`, the service name `OTEL_SERVICE_NAME` (default `tailor`)."""
    global _tracing
    stop_tracing()
    if exporter is None:
        return
    name = os.environ.get("OTEL_SERVICE_NAME", "tailor")
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _tracing = provider, provider.get_tracer("tailor.serving")


def stop_tracing() -> None:
    """Export the spans still buffered and stop tracing."""
    global _tracing
    if _tracing is not None:
        provider, _tracing = _tracing[0], None
        provider.shutdown()


def span(name: str) -> AbstractContextManager[Span | None]:
    """A span named `name`, child of the current one (yields it); when tracing is off, a
    shared no-op yielding None."""
    if _tracing is None:
        return _OFF
    return _tracing[1].start_as_current_span(name)


def request_span(method: str) -> AbstractContextManager[Span | None]:
    """The server span of one HTTP request (named `method`, renamed by `end_request_span`
    once the route is known); the shared no-op when tracing is off."""
    if _tracing is None:
        return _OFF
    return _tracing[1].start_as_current_span(method, kind=SpanKind.SERVER,
                                             attributes={"http.request.method": method})


def end_request_span(current: Span, method: str, route: str, status: int) -> None:
    """Name the request's span `<method> <route>` and add the route, status and request id."""
    current.update_name(f"{method} {route}")
    current.set_attribute("http.route", route)
    current.set_attribute("http.response.status_code", status)
    request_id = REQUEST_ID.get()
    if request_id is not None:
        current.set_attribute("tailor.request_id", request_id)
