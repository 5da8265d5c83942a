"""Online reads of a feature service, without Feast's per-request response building.

`FeatureStore.get_online_features` spends most of a many-row request converting values
between protos, dicts and Arrow, far more than the store reads themselves. A
`ServiceReader` reads the same rows through the same interface every Feast online store
implements (`OnlineStore.online_read`: Feast's own key encoding and value protos, SQLite or
Redis alike), decodes the values straight into columns and runs the service's on-demand
transforms in process with their registered pandas functions.

A view may have an online index: another view tagged `online_index_of` that stores its rows
grouped by fewer entities as aligned arrays (`user_item_index`: a user's pairs under one
key). The reader then reads the index, one key per user, and looks the requested items up
in it, instead of one key per (user, item). Same values, same transform code: the tests hold
the reader equal to `get_online_features` on both stores.

`EntityRows` keeps one entity's rows (a user's stats and index) once read: a request that
looks at the user's history before choosing the items to read features for reads each of
the user's rows once, then `read_columns` reuses them.
"""

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from feast import FeatureStore, FeatureView, OnDemandFeatureView
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.types import Array, UnixTimestamp

from features.feature_repo.definitions import INDEX_ITEMS_TAG, INDEX_OF_TAG


class UnsupportedServiceError(ValueError):
    """The feature service uses something this reader does not reproduce."""


def entity_key(keys: Mapping[str, str]) -> EntityKey:
    """Feast's entity key of string join keys (sorted by name, as Feast sorts them)."""
    names = sorted(keys)
    return EntityKey(join_keys=names, entity_values=[Value(string_val=keys[n]) for n in names])


def decode(value: Value | None):
    """A value proto as Python: a number, a list for arrays, None when unset."""
    if value is None:
        return None
    kind = value.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    decoded = getattr(value, kind)
    return list(decoded.val) if kind.endswith("_list_val") else decoded


def _utc_seconds(seconds: np.ndarray) -> pd.DatetimeIndex:
    """UTC datetimes from Unix seconds, NaT for NaN (pandas' own unit conversion of a float
    array with NaN warns of an overflow)."""
    stamps = np.full(len(seconds), np.datetime64("NaT"), dtype="datetime64[s]")
    known = ~np.isnan(seconds)
    stamps[known] = seconds[known].astype(np.int64)
    return pd.DatetimeIndex(stamps).tz_localize("UTC")


class ViewColumns:
    """How one feature view's values become columns: numbers as float64 (NaN when missing),
    Unix timestamps as UTC datetimes (NaT), arrays as lists (None when missing)."""

    def __init__(self, view: FeatureView, names: Sequence[str]):
        if view.ttl:
            raise UnsupportedServiceError(
                f"feature view {view.name!r} has a TTL; the online reader serves views that "
                "never expire only")
        self.view = view
        self.join_keys = sorted(view.join_keys)
        dtypes = {field.name: field.dtype for field in view.features}
        self.names = list(names)
        self.timestamps = {n for n in self.names if dtypes[n] == UnixTimestamp}
        self.lists = {n for n in self.names if isinstance(dtypes[n], Array)}

    def columns(self, rows: list[tuple]) -> dict[str, np.ndarray]:
        """Columns from `online_read`'s (timestamp, {name: proto}) rows."""
        found = [values for _, values in rows if values]
        present = np.fromiter((bool(values) for _, values in rows), dtype=bool, count=len(rows))
        columns = {}
        for name in self.names:
            decoded = [decode(values.get(name)) for values in found]
            if name in self.lists:
                column = np.full(len(rows), None, dtype=object)
                for position, value in zip(np.flatnonzero(present), decoded, strict=True):
                    column[position] = value
            else:
                column = np.full(len(rows), np.nan)
                column[present] = [np.nan if v is None else v for v in decoded]
                if name in self.timestamps:
                    column = _utc_seconds(column)
            columns[name] = column
        return columns


class EntityRows:
    """One entity's rows (a user's) in the tables keyed by it alone, each read from the
    online store on first use and kept: give it to `ServiceReader.read_columns` to reuse
    them. Not thread-safe: one per request."""

    def __init__(self, reader: "ServiceReader", keys: Mapping[str, str]):
        self.keys = dict(keys)
        self._reader = reader
        self._replies: dict[str, tuple] = {}

    def covers(self, keys: Mapping[str, str]) -> bool:
        """Whether `keys` name exactly this entity."""
        return keys == self.keys

    def reply(self, table: FeatureView, names: Sequence[str]) -> tuple:
        """`online_read`'s (timestamp, {name: proto}) reply for the entity in `table`."""
        if table.name not in self._replies:
            if sorted(table.join_keys) != sorted(self.keys):
                raise ValueError(f"{table.name!r} is not keyed by {sorted(self.keys)} alone")
            self._replies[table.name] = self._reader.online_read(table, [self.keys], names)[0]
        return self._replies[table.name]

    def has(self, view_name: str) -> bool:
        """Whether the store has the entity's row of a view of the service (Redis answers
        a missing key with unset values)."""
        _, values = self.reply(*self._reader.table(view_name))
        return bool(values) and any(value.WhichOneof("val") not in (None, "null_val")
                                    for value in values.values())

    def values(self, view_name: str,
               names: Collection[str] | None = None) -> dict[str, Any] | None:
        """The entity's decoded values of a view of the service (an indexed view's: its
        index row, aligned arrays), all or those of `names`; None when it has no row."""
        if not self.has(view_name):
            return None
        table, read = self._reader.table(view_name)
        _, values = self.reply(table, read)
        return {name: decode(values.get(name)) for name in read
                if names is None or name in names}


class ServiceReader:
    """Reads a feature service's online features: one `online_read` per feature view (on
    the distinct entity keys of the request), then its on-demand views in process."""

    def __init__(self, store: FeatureStore, service_name: str):
        service = store.get_feature_service(service_name)
        self.store = store
        self._provider = store._get_provider()
        self.views: dict[str, ViewColumns] = {}
        self.on_demand: list[OnDemandFeatureView] = []
        on_demand = {view.name: view for view in store.list_on_demand_feature_views()}
        for projection in service.feature_view_projections:
            if projection.name_alias:
                raise UnsupportedServiceError(
                    f"{service_name} renames {projection.name!r}; the reader does not")
            if projection.name in on_demand:
                self.on_demand.append(on_demand[projection.name])
                continue
            names = [feature.name for feature in projection.features]
            self.views[projection.name] = ViewColumns(
                store.get_feature_view(projection.name), names)
        self.indexes: dict[str, FeatureView] = {}
        for index in store.list_feature_views():
            indexed = self.views.get(index.tags.get(INDEX_OF_TAG, ""))
            if indexed is None:
                continue
            if indexed.lists or not set(index.join_keys) < set(indexed.join_keys):
                raise UnsupportedServiceError(
                    f"{index.name!r} cannot index {indexed.view.name!r}: it must group it by a "
                    "subset of its entities, and the indexed view may hold no arrays")
            self.indexes[indexed.view.name] = index

    def table(self, view_name: str) -> tuple[FeatureView, list[str]]:
        """Where a view's features are read from (its index, when it has one) and which."""
        view = self.views[view_name]
        index = self.indexes.get(view_name)
        if index is None:
            return view.view, view.names
        return index, [index.tags[INDEX_ITEMS_TAG], *view.names]

    def entity(self, keys: Mapping[str, str]) -> EntityRows:
        """The rows of one entity (join key -> value), read when first used."""
        return EntityRows(self, keys)

    def read(self, entities: Mapping[str, Sequence[str] | str],
             request: Mapping[str, object] | None = None,
             skip: Collection[str] = ()) -> pd.DataFrame:
        """Features of the service for rows of `entities` (join key -> one value per row, or
        one value for every row), as of `request` data for the on-demand views; views in
        `skip` are not read. Columns by feature name, rows in the given order."""
        return pd.DataFrame(self.read_columns(entities, request, skip))

    def read_columns(self, entities: Mapping[str, Sequence[str] | str],
                     request: Mapping[str, object] | None = None,
                     skip: Collection[str] = (),
                     entity: EntityRows | None = None) -> dict[str, np.ndarray]:
        """`read` as columns (numpy arrays, or pandas' datetime arrays for timestamps; entity
        columns as given): a request's path builds no frame. A view keyed by one entity given
        once comes from `entity` when it is that entity (read there if not yet)."""
        length = max((len(v) for v in entities.values() if not isinstance(v, str)), default=1)
        keys: dict[str, list | str] = {key: value if isinstance(value, str) else list(value)
                for key, value in entities.items()}
        columns: dict[str, Any] = {
            key: [value] * length if isinstance(value, str) else value
            for key, value in keys.items()}
        for name, view in self.views.items():
            if name in skip:
                continue
            columns.update(self._read_indexed(view, keys, length, entity)
                           if name in self.indexes
                           else self._read_view(view, keys, length, entity))
        rows = pd.RangeIndex(length)
        for odfv in self.on_demand:
            sources = odfv.source_feature_view_projections.values()
            if any(source.name in skip for source in sources):
                continue
            inputs = pd.DataFrame({
                **{f.name: columns[f.name] for source in sources for f in source.features},
                **{f.name: (request or {})[f.name]
                   for source in odfv.source_request_sources.values() for f in source.schema},
            }, index=rows)
            transformation = odfv.feature_transformation
            if transformation is None:
                raise ValueError(f"on-demand view {odfv.name} has no transformation")
            outputs = transformation.udf(inputs)
            columns.update({f.name: outputs[f.name].to_numpy() for f in odfv.features})
        return columns

    def _read_distinct(self, table: FeatureView, join_keys: list[str],
                       keys: dict[str, list | str], length: int, names: Sequence[str],
                       entity: EntityRows | None) -> tuple[np.ndarray, list]:
        """One `online_read` of `table` for the distinct key tuples of the rows: the replies,
        and for every row the position of its reply (a key given once is one value for every
        row: a user's rows need no per-row work; `entity` has it when it is that entity)."""
        varying = [key for key in join_keys if not isinstance(keys[key], str)]
        fixed = {key: str(keys[key]) for key in join_keys if key not in varying}
        if not varying and entity is not None and entity.covers(fixed):
            return np.zeros(length, dtype=np.intp), [entity.reply(table, names)]
        if varying:
            positions: dict[tuple, int] = {}
            spread = np.fromiter(
                (positions.setdefault(row, len(positions))
                 for row in zip(*(keys[key] for key in varying), strict=True)),
                dtype=np.intp, count=length)
            distinct = list(positions)
        else:
            spread, distinct = np.zeros(length, dtype=np.intp), [()]
        found = self.online_read(table, [{**fixed, **dict(zip(varying, row, strict=True))}
                                         for row in distinct], names)
        return spread, found

    def online_read(self, table: FeatureView, keys: list[dict[str, str]],
                    names: Sequence[str]) -> list[tuple]:
        """The store's (timestamp, {name: proto}) reply for each entity of `keys`."""
        # A copy: Feast's Redis store appends its timestamp field to the list it is given.
        return self._provider.online_read(self.store.config, table,
                                          [entity_key(key) for key in keys], list(names))

    def _read_view(self, view: ViewColumns, keys: dict[str, list | str], length: int,
                   entity: EntityRows | None) -> dict[str, np.ndarray]:
        """The view's columns for every row."""
        spread, found = self._read_distinct(view.view, view.join_keys, keys, length,
                                            view.names, entity)
        return {name: column[spread] for name, column in view.columns(found).items()}

    def _read_indexed(self, view: ViewColumns, keys: dict[str, list | str], length: int,
                      entity: EntityRows | None) -> dict[str, np.ndarray]:
        """The view's columns from its index: one read of each distinct owner's row (a
        user's), then each row's item looked up in that owner's arrays."""
        index, names = self.table(view.view.name)
        owner_keys = sorted(index.join_keys)
        (item_key,) = [key for key in view.join_keys if key not in owner_keys]
        items_field = names[0]
        spread, found = self._read_distinct(index, owner_keys, keys, length, names, entity)
        row_items = keys[item_key]
        if isinstance(row_items, str):
            row_items = [row_items] * length
        columns = np.full((len(view.names), length), np.nan)
        for owner, (_, values) in enumerate(found):
            items = decode(values.get(items_field)) if values else None
            if not items:
                continue
            rows = np.flatnonzero(spread == owner)
            where = {item: position for position, item in enumerate(items)}
            positions = np.fromiter((where.get(row_items[row], -1) for row in rows),
                                    dtype=np.intp, count=len(rows))
            known = positions >= 0
            arrays = np.array([decode(values.get(name)) for name in view.names], dtype=float)
            columns[:, rows[known]] = arrays[:, positions[known]]
        return {name: _utc_seconds(column) if name in view.timestamps else column
                for name, column in zip(view.names, columns, strict=True)}
