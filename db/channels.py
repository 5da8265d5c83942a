"""The sales channels approved prices are delivered to: the channels config file and the item
mapping file (`channels.example.yaml` and `channel_items.example.csv` at the repository root
document both).

The channels config names, per channel (the channel names of the price suggestions), its
connector (`shopify`, `bigcommerce`, `commercetools`, or `price_feed`: a JSON price list
written to a file), the base URL of its API, the API version, the environment variables that
hold its credentials (never the secrets themselves), its batch size and its retry, rate and
circuit-breaker settings. The item mapping maps item_id x channel to the channel's product
and variant ids (a `price_feed` channel needs none: its feed is keyed by item id).

An approval is checked against both (`Destinations.check`): an unknown channel or an
unmapped item is an error at approval time, naming the file, not a silent skip.
"""

import csv
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.errors import InputError
from features.yaml_files import load_yaml_model

Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
MAPPING_COLUMNS = ("item_id", "channel", "product_id", "variant_id")


class RetrySettings(BaseModel):
    """How a channel's failed calls are retried."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts_per_call: Annotated[int, Field(ge=1, le=20)] = 4
    """Tries of one call on transient errors (5xx, timeouts, refused connections), with
    exponential backoff and full jitter between them."""
    backoff_initial_seconds: Seconds = 0.5
    backoff_max_seconds: Seconds = 30.0
    max_delivery_attempts: Annotated[int, Field(ge=1, le=1000)] = 8
    """A price change whose calls failed this many times is a dead letter (status `failed`);
    between attempts it waits `backoff_initial_seconds * 2**attempt` (at most
    `redelivery_max_seconds`, jittered)."""
    redelivery_max_seconds: Seconds = 600.0
    max_throttle_waits: Annotated[int, Field(ge=1, le=1000)] = 50
    """Waits for a channel's rate limit within one call before it counts as a failure."""


class BreakerSettings(BaseModel):
    """The channel's circuit breaker: it opens after `failure_threshold` consecutive failed
    or slow calls, stays open `open_seconds`, then lets one trial call through (half-open)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failure_threshold: Annotated[int, Field(ge=1, le=1000)] = 5
    slow_call_seconds: Seconds = 10.0
    open_seconds: Seconds = 30.0


class _Channel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: Annotated[int, Field(ge=1)] = 50
    timeout_seconds: Seconds = 10.0
    max_requests_per_second: Seconds | None = None
    """Client-side pacing of calls (none: only the channel's own rate limit)."""
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()

    needs_mapping: ClassVar[bool] = True

    def secrets(self) -> dict[str, str]:
        """The credentials (`access_token`, `client_id`, ... for the `*_env` fields), read
        from the environment variables those fields name (InputError naming each unset
        variable)."""
        variables = {name.removesuffix("_env"): value
                     for name, value in self.model_dump().items()
                     if name.endswith("_env") and isinstance(value, str)}
        values = {name: os.environ.get(variable, "") for name, variable in variables.items()}
        if unset := [variables[name] for name, value in values.items() if not value]:
            raise InputError(f"environment variable(s) {', '.join(unset)} not set: the "
                             "channel's credentials")
        return values


class ShopifyChannel(_Channel):
    """Shopify Admin GraphQL API: `productVariantsBulkUpdate`, one product per call."""

    connector: Literal["shopify"]
    base_url: str
    """The shop's address, e.g. https://pattern-shop.myshopify.com."""
    api_version: str = "2025-10"
    access_token_env: str
    batch_size: Annotated[int, Field(ge=1, le=250)] = 250


class BigCommerceChannel(_Channel):
    """BigCommerce Catalog API v3: `PUT /v3/catalog/variants` (batch)."""

    connector: Literal["bigcommerce"]
    base_url: str
    """The store's API root, e.g. https://api.bigcommerce.com/stores/{store_hash}."""
    api_version: Literal["v3"] = "v3"
    access_token_env: str
    batch_size: Annotated[int, Field(ge=1, le=50)] = 50


class CommercetoolsChannel(_Channel):
    """commercetools HTTP API: product update actions (`changePrice`, `addPrice`) with
    optimistic concurrency (a 409 is re-read and retried)."""

    connector: Literal["commercetools"]
    base_url: str
    """The region's API host, e.g. https://api.europe-west1.gcp.commercetools.com."""
    auth_url: str
    """The region's auth host, e.g. https://auth.europe-west1.gcp.commercetools.com."""
    project_key: str
    api_version: str | None = None
    client_id_env: str
    client_secret_env: str
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "EUR"
    fraction_digits: Annotated[int, Field(ge=0, le=4)] = 2
    batch_size: Annotated[int, Field(ge=1, le=500)] = 100


class PriceFeedChannel(_Channel):
    """A JSON price list (item id -> price) rewritten atomically at `path`, for channels that
    import a feed file."""

    connector: Literal["price_feed"]
    path: Path
    """Relative paths are relative to the channels config file."""
    batch_size: Annotated[int, Field(ge=1)] = 1000

    needs_mapping: ClassVar[bool] = False


ChannelSettings = Annotated[
    ShopifyChannel | BigCommerceChannel | CommercetoolsChannel | PriceFeedChannel,
    Field(discriminator="connector")]


class ChannelsConfig(BaseModel):
    """The channels config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item_mapping: Path | None = None
    """The item mapping CSV (`item_id,channel,product_id,variant_id`); relative to the
    config file."""
    channels: dict[str, ChannelSettings]

    @model_validator(mode="after")
    def _mapping_when_needed(self) -> "ChannelsConfig":
        needing = [name for name, channel in self.channels.items() if channel.needs_mapping]
        if needing and self.item_mapping is None:
            raise ValueError(f"channels {', '.join(needing)} need an item_mapping file")
        return self


class ChannelsConfigError(InputError):
    """A channels config or item mapping file that is not valid."""


class Target(BaseModel):
    """Where one item's price lives on one channel."""

    model_config = ConfigDict(frozen=True)

    product_id: str
    variant_id: str


class UndeliverableError(InputError):
    """An approval whose price could not be delivered: its channel is not configured or its
    item is not mapped on it."""


class Destinations:
    """The channels config with its item mapping, loaded and checked."""

    def __init__(self, config_path: Path, config: ChannelsConfig,
                 targets: Mapping[tuple[str, str], Target]):
        self.config_path = config_path
        self.config = config
        self.targets = dict(targets)

    @property
    def channels(self) -> dict[str, ChannelSettings]:
        return self.config.channels

    def target(self, item_id: str, channel: str) -> Target | None:
        """The product and variant of `item_id` on `channel` (None for a feed channel)."""
        settings = self.channels.get(channel)
        if settings is None or not settings.needs_mapping:
            return None
        return self.targets.get((item_id, channel))

    def problem(self, item_id: str, channel: str) -> str | None:
        """Why a price of `item_id` cannot be delivered to `channel`, None when it can."""
        settings = self.channels.get(channel)
        if settings is None:
            known = ", ".join(sorted(self.channels)) or "none"
            return (f"channel '{channel}' is not in the channels config {self.config_path} "
                    f"(configured: {known})")
        if settings.needs_mapping and (item_id, channel) not in self.targets:
            return (f"item '{item_id}' has no product and variant on channel '{channel}' in "
                    f"the item mapping {self.config.item_mapping}")
        return None

    def check(self, offers: list[tuple[str, str]]) -> None:
        """Raise `UndeliverableError` naming every (item, channel) that cannot be delivered."""
        problems = [problem for item_id, channel in offers
                    if (problem := self.problem(item_id, channel))]
        if problems:
            more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
            raise UndeliverableError("; ".join(problems[:10]) + more)


def _read_mapping(path: Path, channels: Mapping[str, ChannelSettings]
                  ) -> dict[tuple[str, str], Target]:
    if not path.is_file():
        raise ChannelsConfigError(f"{path}: item mapping file not found")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in MAPPING_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise ChannelsConfigError(f"{path}: missing column(s) {', '.join(missing)}; "
                                      f"expected {','.join(MAPPING_COLUMNS)}")
        targets: dict[tuple[str, str], Target] = {}
        for line, row in enumerate(reader, start=2):
            values = {column: (row[column] or "").strip() for column in MAPPING_COLUMNS}
            if empty := [column for column, value in values.items() if not value]:
                raise ChannelsConfigError(f"{path}, line {line}: field '{empty[0]}' is empty")
            if values["channel"] not in channels:
                raise ChannelsConfigError(f"{path}, line {line}: field 'channel' names "
                                          f"'{values['channel']}', not in the channels config")
            key = (values["item_id"], values["channel"])
            if key in targets:
                raise ChannelsConfigError(f"{path}, line {line}: item '{key[0]}' is mapped "
                                          f"twice on channel '{key[1]}'")
            targets[key] = Target(product_id=values["product_id"],
                                  variant_id=values["variant_id"])
    return targets


def load_destinations(path: str | Path) -> Destinations:
    """Read and check a channels config file and its item mapping (`ChannelsConfigError`
    naming the file, line and field of every problem)."""
    path = Path(path).resolve()
    config = load_yaml_model(path, ChannelsConfig, "channels config", ChannelsConfigError)
    base = path.parent
    mapping = None if config.item_mapping is None else base / config.item_mapping
    channels = {name: (settings.model_copy(update={"path": base / settings.path})
                       if isinstance(settings, PriceFeedChannel) else settings)
                for name, settings in config.channels.items()}
    config = config.model_copy(update={"item_mapping": mapping, "channels": channels})
    targets = {} if mapping is None else _read_mapping(mapping, channels)
    return Destinations(path, config, targets)
