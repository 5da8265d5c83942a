"""Settings of the recommendations service only, from `TAILOR_SERVING_*` variables."""

from datetime import datetime
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from features.timestamps import to_utc

LogFormat = Literal["text", "json"]
TraceExporter = Literal["none", "console", "otlp"]


class ServingSettings(BaseSettings):
    """How the service tells the time, how often it checks for new item features, what
    signs the review page's sessions, and how it logs and traces."""

    model_config = SettingsConfigDict(env_prefix="TAILOR_SERVING_", env_file=".env",
                                      extra="ignore")

    clock: Literal["now", "model"] | datetime = "now"
    """The `as_of` instant of the recency features: `now` (UTC, production), `model` (the
    champion's candidate cutoff, for replayed data such as the 2010-2011 demo export) or a
    fixed ISO timestamp (a naive one is taken as UTC)."""

    materialization_poll_seconds: float = Field(default=30.0, gt=0)
    """How often (at most) a request lets the service check the feature registry for a new
    materialization; after one, cached item features are re-read from the online store (in
    the background; requests keep the previous values meanwhile)."""

    result_cache_users: int = Field(default=10_000, ge=0)
    """How many users' ranked lists a worker keeps (about 10 kB each with 300 candidates);
    0 turns the result cache off."""

    result_ttl_seconds: float = Field(default=300.0, gt=0)
    """The longest a ranked list is reused: what bounds the drift of time-based features
    (the user's own events, a model swap, a materialization or a catalog change end it
    sooner)."""

    changes_poll_seconds: float = Field(default=0.1, gt=0)
    """How often (at most) a request reads the stream consumer's change notices, which
    drop the cached lists of users with new purchases and re-read changed items."""

    session_secret: SecretStr | None = None
    """Signs the review page's session cookies; default: a random secret generated once into
    the data directory (set it when several machines serve the page)."""

    metrics: bool = True
    """Record Prometheus metrics and serve them at `/metrics` (off: 404; what the serving
    benchmark compares against to measure their cost)."""

    log_format: LogFormat = "text"
    """`tailor serve`'s log lines: `text` for people, or `json` (one object per line with
    the request id; recommended in production)."""

    trace_exporter: TraceExporter = "none"
    """Where OpenTelemetry spans of requests go: nowhere (tracing off), stdout, or an OTLP
    collector over HTTP (`OTEL_EXPORTER_OTLP_ENDPOINT`)."""

    @field_validator("clock")
    @classmethod
    def _utc(cls, value: str | datetime) -> str | datetime:
        return to_utc(value).to_pydatetime() if isinstance(value, datetime) else value
