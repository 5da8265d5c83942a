"""Online reads of a feature service, without Feast's per-request response building.

`FeatureStore.get_online_features` spends most of a many-row request converting values
between protos, dicts and Arrow, far more than the store reads themselves. A
`ServiceReader` reads the same rows through the same interface every Feast online store
implements (`OnlineStore.online_read`: Feast's own key encoding and value protos, SQLite or
Redis alike), decodes the values straight into columns and runs the service's on-demand
transforms in process with their registered functions (python mode: on numpy columns, with
no pandas frame to build; pandas mode: on a frame).

A view may have an online index: another view tagged `online_index_of` that stores its rows
grouped by fewer entities as aligned arrays (`user_item_index`: a user's pairs under one
key). The reader then reads the index, one key per user, and looks the requested items up
in it, instead of one key per (user, item). Same values, same transform code: the tests hold
the reader equal to `get_online_features` on both stores.

`EntityRows` keeps one entity's rows (a user's stats and index) once read: a request that
looks at the user's history before choosing the items to read features for reads all of
the user's rows in one store call (on Redis: one pipelined round trip, as Feast batches the
views of `get_online_features`), then `read_columns` reuses them.
"""

import ast
import textwrap
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd
from feast import FeatureStore, FeatureView, OnDemandFeatureView
from feast.infra.online_stores.redis import RedisOnlineStore, _versioned_fv_name
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


def _utc_seconds(seconds: np.ndarray) -> np.ndarray:
    """UTC instants (datetime64[ns], NaT for NaN) from Unix seconds (whole: fractions
    dropped). A numpy array, not a zone-aware pandas index: building one costs more than
    the on-demand transform that reads it."""
    return seconds.astype("datetime64[s]").astype("datetime64[ns]")


def zoned(columns: Mapping[str, Any], index: Any = None) -> pd.DataFrame:
    """A frame of the reader's columns, its datetime64 instants as zone-aware UTC."""
    return pd.DataFrame({name: pd.DatetimeIndex(column, tz="UTC")
                         if isinstance(column, np.ndarray) and column.dtype.kind == "M"
                         else column for name, column in columns.items()}, index=index)


def _repeated(value: object, length: int) -> object:
    """A request value for every row: a datetime as a column (pandas is slow to broadcast
    one), anything else as given (pandas broadcasts it)."""
    return pd.DatetimeIndex([value]).repeat(length) if isinstance(value, datetime) else value


class ViewColumns:
    """How one feature view's values become columns: numbers as float64 (NaN when missing),
    Unix timestamps as datetime64[ns] UTC instants (NaT), arrays as lists (None when
    missing). `zoned` makes a frame of them with zone-aware timestamps."""

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

    def repeated(self, row: tuple, length: int) -> dict[str, Any]:
        """`columns` of one `online_read` row, repeated `length` times."""
        _, values = row
        columns: dict[str, Any] = {}
        for name in self.names:
            value = decode(values.get(name)) if values else None
            if name in self.lists:
                column = np.empty(length, dtype=object)
                column.fill(value)  # the one list on every row
            else:
                column = np.full(length, np.nan if value is None else value, dtype=float)
            columns[name] = _utc_seconds(column) if name in self.timestamps else column
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
        """`online_read`'s (timestamp, {name: proto}) reply for the entity in `table`; the
        first call reads the entity's rows of every table of the service keyed by it alone,
        in one store call."""
        if table.name not in self._replies:
            if self._reader.join_keys(table) != sorted(self.keys):
                raise ValueError(f"{table.name!r} is not keyed by {sorted(self.keys)} alone")
            tables = [(owned, read) for owned, read in self._reader.tables_keyed_by(self.keys)
                      if owned.name not in self._replies]
            if table.name not in {owned.name for owned, _ in tables}:
                tables.append((table, list(names)))
            replies = self._reader.online_read_tables(
                [(owned, [self.keys], read) for owned, read in tables])
            for (owned, _), (reply,) in zip(tables, replies, strict=True):
                self._replies[owned.name] = reply
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


def _named_in(source: str | None) -> set[str] | None:
    """The string constants of a function's source text (None without a source)."""
    if not source:
        return None
    tree = ast.parse(textwrap.dedent(source))
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)}


@dataclass
class OnDemand:
    """An on-demand view as the reader runs it: its registered function (Feast's accessors
    to it are slow: read off the view once). A python-mode function gets numpy columns
    (timestamps as datetime64 arrays of UTC instants): microseconds. A pandas-mode one gets
    a frame, about a quarter of a millisecond whatever it computes.

    The function gets the inputs its source names as strings (`inputs["x"]`): a pandas frame
    costs per column, and a view's sources bring features the function never reads. A
    function that builds a name it reads fails on the narrower input (KeyError): the reader
    then gives it every input, from that call on."""

    view: OnDemandFeatureView
    sources: frozenset[str]
    """The feature views it reads."""
    inputs: tuple[str, ...]
    """Their features the function reads: the first columns of its input."""
    requested: tuple[str, ...]
    """Its request fields: the input's last columns."""
    outputs: tuple[str, ...]
    every_input: tuple[str, ...]
    """All the sources' features (`inputs` when the function names them all)."""
    udf: Callable[[Any], Any]
    on_frame: bool
    """Pandas mode: the function takes and returns a frame."""

    @classmethod
    def of(cls, view: OnDemandFeatureView) -> "OnDemand":
        transformation = view.feature_transformation
        if transformation is None or transformation.udf is None:
            raise ValueError(f"on-demand view {view.name} has no transformation")
        if view.mode not in ("python", "pandas") or getattr(view, "singleton", False):
            raise UnsupportedServiceError(
                f"on-demand view {view.name!r} is in mode {view.mode!r}"
                f"{' (singleton)' if getattr(view, 'singleton', False) else ''}; the online "
                "reader runs python and pandas functions on columns")
        sources = view.source_feature_view_projections.values()
        requested = tuple(field.name for source in view.source_request_sources.values()
                          for field in source.schema)
        every_input = tuple(f.name for source in sources for f in source.features)
        named = _named_in(getattr(transformation, "udf_string", None))
        inputs = every_input if named is None else tuple(n for n in every_input if n in named)
        return cls(view, frozenset(source.name for source in sources), inputs, requested,
                   tuple(f.name for f in view.features), every_input, transformation.udf,
                   view.mode == "pandas")

    def run(self, columns: Mapping[str, Any], request: Mapping[str, object],
            length: int) -> dict[str, np.ndarray]:
        """The view's output columns for rows of `columns` (its source features) and the
        `request` data: numbers as float64 (as the views' are)."""
        try:
            outputs = self.udf(self._input(columns, request, length))
        except KeyError:
            if self.inputs == self.every_input:
                raise
            self.inputs = self.every_input
            outputs = self.udf(self._input(columns, request, length))
        if self.on_frame:
            values = outputs.to_numpy()  # one array: no Series per column
            if values.dtype.kind in "iuf":
                values = values.astype(float, copy=False)
                position = {name: column for column, name in enumerate(outputs.columns)}
                return {name: values[:, position[name]] for name in self.outputs}
        return {name: _as_float(np.asarray(outputs[name])) for name in self.outputs}

    def _input(self, columns: Mapping[str, Any], request: Mapping[str, object],
               length: int) -> Any:
        if self.on_frame:  # zone-aware datetimes, as Feast gives a pandas function
            frame = zoned({name: columns[name] for name in self.inputs},
                          index=pd.RangeIndex(length))
            for name in self.requested:
                frame[name] = _repeated(request[name], length)
            return frame
        return {**{name: columns[name] for name in self.inputs},
                **{name: _request_column(request[name], length) for name in self.requested}}


def _as_float(values: np.ndarray) -> np.ndarray:
    """Numbers as float64 (as the views' are); anything else as it is."""
    return values.astype(float, copy=False) if values.dtype.kind in "iufb" else values


def _request_column(value: object, length: int) -> Any:
    """A request value on every row: a datetime as a datetime64 array of its UTC instant."""
    if not isinstance(value, datetime):
        return [value] * length
    instant = pd.Timestamp(value)
    if instant.tzinfo is not None:
        instant = instant.tz_convert("UTC").tz_localize(None)
    return np.full(length, instant.as_unit("ns").to_datetime64())


class ServiceReader:
    """Reads a feature service's online features: one `online_read` per feature view (on
    the distinct entity keys of the request), then its on-demand views in process."""

    def __init__(self, store: FeatureStore, service_name: str):
        service = store.get_feature_service(service_name)
        self.store = store
        self._provider = store._get_provider()
        self.views: dict[str, ViewColumns] = {}
        self.on_demand: list[OnDemand] = []
        on_demand = {view.name: view for view in store.list_on_demand_feature_views()}
        for projection in service.feature_view_projections:
            if projection.name_alias:
                raise UnsupportedServiceError(
                    f"{service_name} renames {projection.name!r}; the reader does not")
            if projection.name in on_demand:
                self.on_demand.append(OnDemand.of(on_demand[projection.name]))
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
        self._join_keys: dict[str, list[str]] = {}

    def join_keys(self, table: FeatureView) -> list[str]:
        """The table's join keys, sorted (Feast works them out on every call)."""
        if table.name not in self._join_keys:
            self._join_keys[table.name] = sorted(table.join_keys)
        return self._join_keys[table.name]

    def table(self, view_name: str) -> tuple[FeatureView, list[str]]:
        """Where a view's features are read from (its index, when it has one) and which."""
        view = self.views[view_name]
        index = self.indexes.get(view_name)
        if index is None:
            return view.view, view.names
        return index, [index.tags[INDEX_ITEMS_TAG], *view.names]

    def tables_keyed_by(self, keys: Collection[str]) -> list[tuple[FeatureView, list[str]]]:
        """The tables read for the service's views keyed by exactly `keys` (a view's index
        in its place), with the features read from each."""
        wanted = sorted(keys)
        tables = [self.table(name) for name in self.views]
        return [(table, names) for table, names in tables if self.join_keys(table) == wanted]

    def entity(self, keys: Mapping[str, str]) -> EntityRows:
        """The rows of one entity (join key -> value), read when first used."""
        return EntityRows(self, keys)

    def read(self, entities: Mapping[str, Sequence[str] | str],
             request: Mapping[str, object] | None = None,
             skip: Collection[str] = ()) -> pd.DataFrame:
        """Features of the service for rows of `entities` (join key -> one value per row, or
        one value for every row), as of `request` data for the on-demand views; views in
        `skip` are not read. Columns by feature name, rows in the given order; timestamps
        zone-aware (UTC)."""
        return zoned(self.read_columns(entities, request, skip))

    def read_columns(self, entities: Mapping[str, Sequence[str] | str],
                     request: Mapping[str, object] | None = None,
                     skip: Collection[str] = (),
                     entity: EntityRows | None = None) -> dict[str, np.ndarray]:
        """`read` as columns (numpy arrays, timestamps as datetime64[ns] UTC instants; entity
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
        for transform in self.on_demand:
            if not transform.sources.isdisjoint(skip):
                continue
            columns.update(transform.run(columns, request or {}, length))
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

    def online_read_tables(self, reads: Sequence[tuple[FeatureView, list[dict[str, str]],
                                                       Sequence[str]]]) -> list[list[tuple]]:
        """`online_read` of several (table, keys, names): on Redis in one pipelined round
        trip, the way Feast's Redis store batches the views of
        `get_online_features`; elsewhere one `online_read` per table."""
        online = self._provider.online_store
        config = self.store.config
        if not isinstance(online, RedisOnlineStore) or len(reads) < 2:
            return [self.online_read(table, keys, names) for table, keys, names in reads]
        commands, layouts = [], []
        for table, keys, names in reads:
            view_name = _versioned_fv_name(table, config)
            requested, fields = online._generate_hset_keys_for_features(
                table, list(names), fv_name_override=view_name)
            redis_keys = online._generate_redis_keys_for_entities(
                config, [entity_key(key) for key in keys])
            commands += [(redis_key, fields) for redis_key in redis_keys]
            layouts.append((view_name, requested, len(redis_keys)))
        values = online._read_hash_fields(config, commands)
        replies, start = [], 0
        for view_name, requested, count in layouts:
            replies.append(online._convert_redis_values_to_protobuf(
                values[start:start + count], view_name, requested))
            start += count
        return replies

    def _read_view(self, view: ViewColumns, keys: dict[str, list | str], length: int,
                   entity: EntityRows | None) -> dict[str, np.ndarray]:
        """The view's columns for every row."""
        spread, found = self._read_distinct(view.view, view.join_keys, keys, length,
                                            view.names, entity)
        if len(found) == 1:  # one entity's row (a user's), on every row
            return view.repeated(found[0], length)
        return {name: column[spread] for name, column in view.columns(found).items()}

    def _read_indexed(self, view: ViewColumns, keys: dict[str, list | str], length: int,
                      entity: EntityRows | None) -> dict[str, np.ndarray]:
        """The view's columns from its index: one read of each distinct owner's row (a
        user's), then each row's item looked up in that owner's arrays."""
        index, names = self.table(view.view.name)
        owner_keys = self.join_keys(index)
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
            rows: slice | np.ndarray = slice(None)  # one owner (a user): every row
            owned = row_items
            if len(found) > 1:
                rows = np.flatnonzero(spread == owner)
                owned = [row_items[row] for row in rows]
            where = {item: position for position, item in enumerate(items)}
            positions = np.fromiter(map(where.get, owned, repeat(-1)), dtype=np.intp,
                                    count=len(owned))
            # The owner's arrays, then a NaN: where an item it has no row for (-1) lands.
            arrays = np.full((len(view.names), len(items) + 1), np.nan)
            arrays[:, :-1] = [decode(values.get(name)) for name in view.names]
            columns[:, rows] = arrays[:, positions]
        return {name: _utc_seconds(column) if name in view.timestamps else column
                for name, column in zip(view.names, columns, strict=True)}
