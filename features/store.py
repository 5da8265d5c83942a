"""The one place that builds the Feast `FeatureStore` from tailor's settings.

SQLite is the embedded online store; setting `TAILOR_REDIS_URL` switches to Redis, and
`TAILOR_REDIS_CLUSTER_NODES` to a Redis Cluster. All go through the same code path: only the
`online_store` block of the config differs.
"""

import copy
import json
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

import yaml
from feast import FeatureStore, FileSource, RepoConfig

from features.errors import InputError
from features.feature_repo import definitions
from features.settings import Settings

FEATURE_STORE_YAML = Path(definitions.__file__).with_name("feature_store.yaml")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Feast warns on every use of an on-demand view; ours is a small, tested pandas transform.
warnings.filterwarnings("ignore", "On demand feature view is an experimental", RuntimeWarning)
warnings.filterwarnings("ignore", r"fetch_arrow_table\(\) is deprecated", DeprecationWarning)
# Feast's connection string cannot carry redis-py's `retry` object: a Redis Cluster's
# "no retry" is the deprecated `cluster_error_retry_attempts=0`.
warnings.filterwarnings("ignore", ".*'cluster_error_retry_attempts'", DeprecationWarning)


OnlineStoreKind = Literal["sqlite", "redis", "redis_cluster"]


def online_store_kind(settings: Settings) -> OnlineStoreKind:
    """The online store the settings choose: a Redis Cluster when its nodes are set, else
    Redis when `redis_url` is, else SQLite."""
    if settings.redis_cluster_nodes:
        return "redis_cluster"
    return "redis" if settings.redis_url else "sqlite"


def _options(password: str | None, tls: bool, timeout_seconds: float | None,
             no_retry: str) -> list[str]:
    """The `name=value` options of Feast's Redis connection string (Feast JSON-decodes each
    value: the password goes as a JSON string, so that one like `123` stays a string)."""
    options = []
    if password:
        options.append(f"password={json.dumps(password)}")
    if tls:
        options.append("ssl=true")
    if timeout_seconds is not None:
        options += [f"socket_timeout={timeout_seconds}",
                    f"socket_connect_timeout={timeout_seconds}", no_retry]
    return options


def redis_connection_string(url: str, timeout_seconds: float | None = None) -> str:
    """Translate `redis://[:password@]host[:port][/db]` into Feast's `host:port,db=N,...`;
    with `timeout_seconds` (the request path), connecting and each socket read give up after
    that long, and a failed command is not retried (Feast hands the options to its Redis
    client: without them a hung server blocks for ever, and redis-py's default retries with
    backoff turn one timeout into four and seconds of sleep)."""
    parsed = urlparse(url)
    if parsed.scheme not in {"redis", "rediss"} or not parsed.hostname:
        raise InputError(f"TAILOR_REDIS_URL must look like redis://host:port/db, got {url!r}")
    parts = [f"{parsed.hostname}:{parsed.port or 6379}"]
    database = parsed.path.lstrip("/")
    if database:
        parts.append(f"db={int(database)}")
    password = unquote(parsed.password) if parsed.password else None
    return ",".join(parts + _options(password, parsed.scheme == "rediss", timeout_seconds,
                                     "retry=null"))


def redis_cluster_connection_string(nodes: str, password: str | None = None,
                                    tls: bool = False,
                                    timeout_seconds: float | None = None) -> str:
    """Feast's connection string of a `redis_cluster` online store from the settings'
    `host:port,...` nodes, password and TLS; `timeout_seconds` as for Redis. redis-py's
    cluster client refuses a `retry` option (its nodes' connections never retry) and tries a
    failed command 3 more times itself, each waiting out the timeout again:
    `cluster_error_retry_attempts=0` turns that off. What it cannot turn off: a pipeline
    (Feast reads through one) sends each command that failed on a node again on its own, so
    a hung node costs up to (1 + the read's keys on it) timeouts."""
    addresses = [node.strip() for node in nodes.split(",")]
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or any(c in host for c in ":/=@ ") or not port.isdigit() \
                or not 0 < int(port) < 65536:
            raise InputError("TAILOR_REDIS_CLUSTER_NODES must look like host:port,host:port,"
                             f"... (names or IPv4 addresses, no scheme), got {nodes!r}")
    if password and "," in password:
        raise InputError("TAILOR_REDIS_CLUSTER_PASSWORD cannot hold a comma: Feast's Redis "
                         "connection string is split on commas")
    return ",".join(addresses + _options(password, tls, timeout_seconds,
                                         "cluster_error_retry_attempts=0"))


def repo_config(settings: Settings, timeout_seconds: float | None = None) -> RepoConfig:
    """The Feast config: `feature_store.yaml` filled in from settings (`timeout_seconds`:
    see `redis_connection_string`)."""
    text = FEATURE_STORE_YAML.read_text().replace("${TAILOR_DATA_DIR}", str(settings.data_dir))
    raw = yaml.safe_load(text)
    raw["project"] = settings.feast_project
    if settings.redis_cluster_nodes:
        raw["online_store"] = {
            "type": "redis",
            "redis_type": "redis_cluster",
            "connection_string": redis_cluster_connection_string(
                settings.redis_cluster_nodes, settings.redis_cluster_password,
                settings.redis_cluster_tls, timeout_seconds),
        }
    elif settings.redis_url:
        raw["online_store"] = {
            "type": "redis",
            "connection_string": redis_connection_string(settings.redis_url, timeout_seconds),
        }
    config = RepoConfig(**raw)
    config.repo_path = settings.data_dir
    return config


def feature_store(settings: Settings, timeout_seconds: float | None = None) -> FeatureStore:
    """A Feast store on the settings' data directory and online store (`timeout_seconds`:
    of the Redis online store's calls, for the request path; batch writes wait)."""
    (settings.data_dir / "feast").mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=repo_config(settings, timeout_seconds))


def anchored_objects(data_dir: Path) -> list:
    """Copies of the repository's objects with file sources anchored at `data_dir`.

    Feast's DuckDB offline store reads a relative source path from the working directory,
    not from the repository path, so sources are registered with absolute paths.
    """
    objects = copy.deepcopy(definitions.FEAST_OBJECTS)
    for obj in objects:
        source = obj if isinstance(obj, FileSource) else getattr(obj, "batch_source", None)
        if isinstance(source, FileSource) and not Path(source.path).is_absolute():
            source.file_options.uri = str(data_dir / source.path)
    return objects


def apply_definitions(store: FeatureStore) -> list[str]:
    """Register every object of the feature repository; returns their names."""
    if store.config.repo_path is None:
        raise ValueError("the feature store has no repository path")
    objects = anchored_objects(Path(store.config.repo_path))
    store.apply(objects)
    return [obj.name for obj in objects]


def materialize(store: FeatureStore, end: datetime | None = None) -> datetime:
    """Load the latest feature values up to `end` (default: now) into the online store."""
    end = end or datetime.now(UTC)
    store.materialize(start_date=EPOCH, end_date=end)
    return end


def materializations(store: FeatureStore, view_name: str) -> tuple:
    """The materialization intervals the registry records for a view, re-read from the
    registry: they grow each time `materialize` loads the view."""
    store.refresh_registry()
    return tuple(store.get_feature_view(view_name).materialization_intervals)


def online_features(
    store: FeatureStore, user_id: str, item_ids: list[str], as_of: datetime
) -> dict[str, list]:
    """The `recs_ranker_v1` features of one user against each of `item_ids`, as of a time."""
    rows = [{"user_id": user_id, "item_id": item, "as_of": as_of} for item in item_ids]
    service = store.get_feature_service(definitions.RECS_RANKER_SERVICE)
    return store.get_online_features(features=service, entity_rows=rows).to_dict()
