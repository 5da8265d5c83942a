"""Typed settings, read once from `TAILOR_*` environment variables (or a `.env` file)."""

from functools import lru_cache
from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where tailor keeps its data and which online store it talks to."""

    model_config = SettingsConfigDict(env_prefix="TAILOR_", env_file=".env", extra="ignore")

    data_dir: Path = Path("data")
    """Root of the event log, the catalog, feature tables and the Feast registry."""

    redis_url: str | None = None
    """`redis://host:port/db`: use Redis as the Feast online store instead of SQLite."""

    feast_project: str = "tailor"

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


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own `Settings`)."""
    return Settings()
