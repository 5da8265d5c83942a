"""Feast objects: entities, sources, feature views and the versioned feature services.

Declarations only (Feast imports this file to apply it). Sources are the feature tables that
`features.transforms` writes, with paths relative to the data directory; each row is valid
from its `event_timestamp` (the end of the day whose events it summarises) on, for ever.
"""

from datetime import timedelta
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource, ValueType
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Array, Float64, Int64, String, UnixTimestamp

# A row stays valid until a newer one replaces it: tables only get a row when a value changes.
NO_EXPIRY = timedelta(0)

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING,
              description="A signed-in customer")
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING,
              description="A catalog item")

events_source = FileSource(
    name="events_source", path="events/date=*/*.parquet", timestamp_field="ts",
    description="The canonical event log (Parquet, partitioned by date)",
)
user_stats_source = FileSource(
    name="user_stats_source", path="features/user_stats.parquet",
    timestamp_field="event_timestamp",
)
item_stats_source = FileSource(
    name="item_stats_source", path="features/item_stats.parquet",
    timestamp_field="event_timestamp",
)
user_item_stats_source = FileSource(
    name="user_item_stats_source", path="features/user_item_stats.parquet",
    timestamp_field="event_timestamp",
)

user_stats_fv = FeatureView(
    name="user_stats",
    entities=[user],
    ttl=NO_EXPIRY,
    schema=[
        Field(name="user_frequency", dtype=Int64, description="Distinct orders so far"),
        Field(name="user_monetary", dtype=Float64, description="Net spend so far"),
        Field(name="user_distinct_items", dtype=Int64),
        Field(name="user_returns", dtype=Int64, description="Return events so far"),
        Field(name="user_first_purchase_ts", dtype=UnixTimestamp),
        Field(name="user_last_purchase_ts", dtype=UnixTimestamp),
        Field(name="user_category_names", dtype=Array(String)),
        Field(name="user_category_shares", dtype=Array(Float64),
              description="Share of units bought per category, aligned with the names"),
    ],
    source=user_stats_source,
    online=True,
)

item_stats_fv = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=NO_EXPIRY,
    schema=[
        Field(name="item_purchases_7d", dtype=Int64),
        Field(name="item_purchases_30d", dtype=Int64),
        Field(name="item_purchases_90d", dtype=Int64),
        Field(name="item_buyers_7d", dtype=Int64),
        Field(name="item_buyers_30d", dtype=Int64),
        Field(name="item_buyers_90d", dtype=Int64),
        Field(name="item_rebuy_rate_30d", dtype=Float64,
              description="Share of the item's buyers from before the last 30 days who "
                          "bought it again within them (shrunk toward 0.1)"),
        Field(name="item_trend_7d_30d", dtype=Float64,
              description="Relative change of the 7-day purchase rate over the 30-day rate"),
        Field(name="item_price_last", dtype=Float64),
        Field(name="item_price_mean_30d", dtype=Float64),
        Field(name="item_price_min", dtype=Float64),
        Field(name="item_price_max", dtype=Float64),
    ],
    source=item_stats_source,
    online=True,
)

user_item_stats_fv = FeatureView(
    name="user_item_stats",
    entities=[user, item],
    ttl=NO_EXPIRY,
    schema=[
        Field(name="user_item_times_bought", dtype=Int64),
        Field(name="user_item_units_bought", dtype=Int64),
        Field(name="user_item_units_returned", dtype=Int64),
        Field(name="user_item_last_purchase_ts", dtype=UnixTimestamp),
    ],
    source=user_item_stats_source,
    online=True,
)

user_item_index_source = FileSource(
    name="user_item_index_source", path="features/user_item_index.parquet",
    timestamp_field="event_timestamp",
)

INDEX_OF_TAG = "online_index_of"
"""Tag of a view that stores another view's rows grouped by fewer entities (see below)."""
INDEX_ITEMS_TAG = "online_index_items"
"""Tag naming the index view's array of the grouped entity's keys."""

user_item_index_fv = FeatureView(
    name="user_item_index",
    entities=[user],
    ttl=NO_EXPIRY,
    schema=[
        Field(name="item_ids", dtype=Array(String),
              description="Every item the user has a user_item_stats row for"),
        Field(name="user_item_times_bought", dtype=Array(Int64)),
        Field(name="user_item_units_bought", dtype=Array(Int64)),
        Field(name="user_item_units_returned", dtype=Array(Int64)),
        Field(name="user_item_last_purchase_ts", dtype=Array(Float64),
              description="Unix seconds, NaN before the first purchase"),
    ],
    source=user_item_index_source,
    online=True,
    tags={INDEX_OF_TAG: user_item_stats_fv.name, INDEX_ITEMS_TAG: "item_ids"},
    description="The user_item_stats rows of each user as aligned arrays: a storage layout "
                "for online reads (one key per user instead of one per candidate), never a "
                "model input; features.online reads it in place of user_item_stats",
)

as_of_request = RequestSource(
    name="as_of_request",
    schema=[Field(name="as_of", dtype=UnixTimestamp)],
    description="The instant features are wanted for: now online, the label time offline",
)


@on_demand_feature_view(
    sources=[user_stats_fv, user_item_stats_fv, as_of_request],
    schema=[
        Field(name="user_recency_days", dtype=Float64),
        Field(name="user_tenure_days", dtype=Float64),
        Field(name="user_item_days_since_last_purchase", dtype=Float64),
    ],
    mode="python",
)
def recency(inputs: dict[str, Any]) -> dict[str, Any]:
    """Days from the last purchase (user, user x item) and the first one to `as_of`.

    Feast runs this function from its source text: it may use nothing but its argument and
    the imports it makes itself. Python mode, on columns: numpy datetime64 arrays of UTC
    instants from the online reader and training (a few microseconds; a pandas frame costs
    a quarter of a millisecond per request), or lists of datetimes and None from Feast.
    """
    import numpy as np
    import pandas as pd

    def instants(name: str) -> np.ndarray:
        values = inputs[name]
        if isinstance(values, np.ndarray) and values.dtype.kind == "M":
            return values.astype("datetime64[ns]", copy=False)  # UTC; NaT where missing
        # Datetimes (naive ones are UTC), strings, None: to UTC instants.
        return pd.to_datetime(pd.Series(values, dtype=object), utc=True).to_numpy(
            dtype="datetime64[ns]")

    def days_since(name: str) -> list[float]:  # lists: the python mode's outputs
        return ((as_of - instants(name)) / np.timedelta64(1, "D")).tolist()

    as_of = instants("as_of")
    return {
        "user_recency_days": days_since("user_last_purchase_ts"),
        "user_tenure_days": days_since("user_first_purchase_ts"),
        "user_item_days_since_last_purchase": days_since("user_item_last_purchase_ts"),
    }


RECS_RANKER_SERVICE = "recs_ranker_v1"
"""The versioned feature service the recommender trains and serves on: its one name."""

recs_ranker_v1 = FeatureService(
    name=RECS_RANKER_SERVICE,
    features=[user_stats_fv, item_stats_fv, user_item_stats_fv, recency],
    description="Features of the LightGBM LambdaRank recommender, version 1",
)

FEAST_OBJECTS = [
    user, item, events_source, user_stats_source, item_stats_source, user_item_stats_source,
    user_item_index_source, user_stats_fv, item_stats_fv, user_item_stats_fv,
    user_item_index_fv, as_of_request, recency, recs_ranker_v1,
]
