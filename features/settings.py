"""Typed settings, read once from `TAILOR_*` environment variables (or a `.env` file)."""

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where tailor keeps its data and which online store it talks to."""

    model_config = SettingsConfigDict(env_prefix="TAILOR_", env_file=".env", extra="ignore")

    data_dir: Path = Path("data")
    """Root of the event log, the catalog, feature tables and the Feast registry."""

    redis_url: str | None = None
    """`redis://host:port/db`: use Redis as the Feast online store instead of SQLite."""

    redis_cluster_nodes: str | None = None
    """`host:port,host:port,...`: some nodes of a Redis Cluster (the others are found from
    them); use the cluster as the Feast online store, instead of SQLite or `redis_url`'s
    server (which still serves the result cache, change feed and event stream)."""

    redis_cluster_password: str | None = None
    """The Redis Cluster's password (`requirepass`), if it has one."""

    redis_cluster_tls: bool = False
    """Connect to the Redis Cluster's nodes over TLS."""

    feast_project: str = "tailor"

    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TAILOR_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
    )
    """An MLflow tracking server; default: a SQLite store under the data directory."""

    dask_scheduler: str | None = None
    """`tcp://host:8786`: a Dask scheduler; the ranker's and the demand model's LightGBM fits
    run on its cluster (`lightgbm.dask`) instead of in the training process."""

    database_url: str | None = None
    """SQLAlchemy URL of the service database (e.g. `postgresql+psycopg://...`); default:
    SQLite at `<data dir>/tailor.db`."""

    approval_policy: Path | None = None
    """An approval policy YAML (`approval_policy.example.yaml`) applied to every batch of price
    suggestions stored; default: none, every suggestion waits for a person."""

    channels_config: Path | None = None
    """The channels config YAML (`channels.example.yaml`): the sales channels approved prices
    are delivered to; default: none (approvals queue their price changes in the outbox, and
    nothing checks or delivers them)."""

    @property
    def database(self) -> str:
        """The service database URL, the embedded SQLite one unless set."""
        return self.database_url or f"sqlite:///{self.data_dir / 'tailor.db'}"

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def events_dir(self) -> Path:
        return self.data_dir / "events"

    @property
    def catalog_path(self) -> Path:
        return self.data_dir / "catalog.parquet"

    @property
    def feature_tables_dir(self) -> Path:
        return self.data_dir / "features"

    @property
    def mlflow_dir(self) -> Path:
        return self.data_dir / "mlflow"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own `Settings`)."""
    return Settings()
