"""Point-in-time features of a Feast feature service, joined in DuckDB.

Feast's DuckDB offline store joins each entity row with every row of its keys dated before
it, then keeps the latest: each candidate met its item's whole daily history, which took
9 GB on the shared export. Here each view joins its distinct (keys, timestamp) rows once with
an ASOF JOIN on the view's registered source (the latest row dated at or before the
timestamp: a row is valid from its `event_timestamp` on, as in Feast), the values are spread
back to the entity rows, and on-demand views run their registered functions on them. The
result equals `get_historical_features` (tests/test_point_in_time.py).
"""

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from feast import FeatureStore, FeatureView, FileSource, OnDemandFeatureView
from pandas.api.extensions import ExtensionArray
from pandas.arrays import NumpyExtensionArray

TIMESTAMP = "event_timestamp"


def _distinct(entities: pd.DataFrame, keys: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Each entity row's position among the distinct rows of `keys`, and those rows (in
    order of first appearance)."""
    codes = entities.groupby(keys, sort=False).ngroup().to_numpy()
    return codes, entities[keys].drop_duplicates(ignore_index=True)


def _view_features(db: duckdb.DuckDBPyConnection, view: FeatureView, names: list[str],
                   entities: pd.DataFrame) -> dict[str, ExtensionArray]:
    """The latest values of `names` of a batch view at each entity row's timestamp."""
    source = view.batch_source
    if view.ttl or not isinstance(source, FileSource):
        raise ValueError(f"feature view {view.name}: only file sources without a ttl")
    codes, wanted = _distinct(entities, [*view.join_keys, TIMESTAMP])
    wanted["_row"] = np.arange(len(wanted))
    on = " AND ".join(f'w."{key}" = f."{key}"' for key in view.join_keys)
    selected = ", ".join(f'f."{name}"' for name in names)
    db.register("wanted", wanted)
    found = db.sql(
        f"SELECT w._row, {selected} FROM wanted w ASOF LEFT JOIN read_parquet($path) f "
        f'ON {on} AND w.{TIMESTAMP} >= f."{source.timestamp_field}" ORDER BY w._row',
        params={"path": source.path}).to_arrow_table().to_pandas()
    db.unregister("wanted")
    return {name: found[name].array.take(codes) for name in names}


def _on_demand_features(view: OnDemandFeatureView, names: list[str],
                        values: dict[str, ExtensionArray],
                        entities: pd.DataFrame) -> dict[str, ExtensionArray]:
    """An on-demand view's `names`, by its registered function on its inputs: the source
    views' `values` and the entities' request fields. A python-mode function gets numpy
    columns (datetimes as UTC datetime64; Feast's `transform_arrow` would hand it Python
    objects, a few per row), a pandas-mode one goes through Feast's transformation."""
    inputs = {f.name: values[f.name] for source in view.source_feature_view_projections.values()
              for f in source.features}
    inputs |= {f.name: entities[f.name].array for request in
               view.source_request_sources.values() for f in request.schema}
    if view.mode == "python" and view.feature_transformation is not None:
        found = view.feature_transformation.udf(
            {name: _numpy_column(column) for name, column in inputs.items()})
        return {name: NumpyExtensionArray(np.asarray(found[name])) for name in names}
    table = pa.Table.from_pandas(pd.DataFrame(inputs), preserve_index=False)
    transformed = view.transform_arrow(table).to_pandas()
    return {name: transformed[name].array for name in names}


def _numpy_column(column: ExtensionArray) -> np.ndarray:
    """A column as numpy: zone-aware datetimes as datetime64 of their UTC instants."""
    series = pd.Series(column, copy=False)
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    return series.to_numpy()


def historical_features(store: FeatureStore, entities: pd.DataFrame,
                        service: str) -> pd.DataFrame:
    """The features of `service` for each row of `entities` (the join keys of its views,
    `event_timestamp`, and the request fields of its on-demand views), on their index."""
    on_demand = {view.name: view for view in store.list_on_demand_feature_views()}
    projections = store.get_feature_service(service).feature_view_projections
    values: dict[str, ExtensionArray] = {}
    with duckdb.connect() as db:
        for projection in projections:
            if projection.name not in on_demand:
                values |= _view_features(db, store.get_feature_view(projection.name),
                                         [f.name for f in projection.features], entities)
    for projection in projections:
        if projection.name in on_demand:
            values |= _on_demand_features(on_demand[projection.name],
                                          [f.name for f in projection.features], values,
                                          entities)
    return pd.DataFrame(values, index=entities.index)
