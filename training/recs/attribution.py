"""Online evaluation: what shoppers did with the recommendations they were served.

An event is attributed to a served item when it carries the `request_id` of the response
that served the item, names the same `item_id`, and follows the response within the window:
`response ts <= event ts <= response ts + window` (default `WINDOW`, 7 days). Events without
a `request_id`, or whose request and item match no served item in the window, are not
attributed: a purchase the storefront did not tie to a response counts nowhere here.

Per (`model_version`, `fallback`) group, one row per candidate `source` and a `total` row:
- `responses`: responses that served at least one of the row's items; `impressions`: items
  served (responses with no items are not in the served log);
- `clicks`: impressions with at least one attributed `view`; `click_rate` = clicks /
  impressions;
- `purchases`: impressions with at least one attributed `purchase`; `purchase_rate` =
  purchases / impressions;
- `units` and `revenue`: the attributed purchases' quantity and quantity x unit_price, in
  `currency` (the report refuses purchases in several currencies).
Fallback responses (the popularity list for an unknown user, missing features or no
model) are their own group (`fallback` true), apart from the model version's personalised
ones, whose `popular` rows are the top-ups of short candidate lists.
"""

from datetime import datetime, timedelta

import pandas as pd

from features.errors import InputError
from features.timestamps import to_utc
from models.recs.candidates import SOURCES

WINDOW = timedelta(days=7)
TOTAL = "total"
GROUP = ["model_version", "fallback"]
COLUMNS = ("model_version", "fallback", "source", "responses", "impressions", "clicks",
           "click_rate", "purchases", "purchase_rate", "units", "revenue", "currency")


def _matched(served: pd.DataFrame, events: pd.DataFrame,
             window: timedelta) -> tuple[pd.DataFrame, str | None]:
    """Per served item (request_id, item_id) that anything was attributed to: clicked,
    purchased, units, revenue; and the purchases' currency (None without purchases)."""
    kinds = events[events["request_id"].notna() & events["event_type"].isin(["view",
                                                                           "purchase"])]
    pairs = kinds.merge(served[["request_id", "item_id", "ts"]], on=["request_id", "item_id"],
                        suffixes=("", "_served"))
    pairs = pairs[(pairs["ts"] >= pairs["ts_served"])
                  & (pairs["ts"] <= pairs["ts_served"] + window)]
    bought = pairs["event_type"] == "purchase"
    currencies = sorted(pairs.loc[bought, "currency"].dropna().unique())
    if len(currencies) > 1:
        raise InputError(f"the attributed purchases are in {len(currencies)} currencies "
                         f"({', '.join(currencies)}): their revenue cannot be summed")
    pairs = pairs.assign(clicked=pairs["event_type"] == "view", purchased=bought,
                         units=pairs["quantity"].where(bought, 0),
                         revenue=(pairs["quantity"] * pairs["unit_price"]).where(bought, 0.0))
    per_item = pairs.groupby(["request_id", "item_id"]).agg(
        clicked=("clicked", "any"), purchased=("purchased", "any"), units=("units", "sum"),
        revenue=("revenue", "sum"))
    return per_item.reset_index(), currencies[0] if currencies else None


def _summary(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    rows = frame.groupby(keys, dropna=False).agg(
        responses=("request_id", "nunique"), impressions=("item_id", "size"),
        clicks=("clicked", "sum"), purchases=("purchased", "sum"), units=("units", "sum"),
        revenue=("revenue", "sum")).reset_index()
    rows["click_rate"] = rows["clicks"] / rows["impressions"]
    rows["purchase_rate"] = rows["purchases"] / rows["impressions"]
    return rows


def _order(rows: pd.DataFrame) -> pd.DataFrame:
    """Personalised groups by version (numeric versions in number order), then fallback
    ones; in each, the sources in candidate order, then the total."""
    version = rows["model_version"].fillna("")
    source_rank = {**{name: rank for rank, name in enumerate(SOURCES)},
                   TOTAL: len(SOURCES) + 1}  # a source unknown here: before the total
    keys = pd.DataFrame({"fallback": rows["fallback"], "length": version.str.len(),
                         "version": version,
                         "source": rows["source"].map(source_rank).fillna(len(SOURCES)),
                         "name": rows["source"]})
    order = keys.sort_values(["fallback", "length", "version", "source", "name"]).index
    return rows.loc[order].reset_index(drop=True)


def attribution(served: pd.DataFrame, events: pd.DataFrame, since: datetime,
                until: datetime | None = None, window: timedelta = WINDOW) -> pd.DataFrame:
    """Impressions, clicks and purchases of the responses with `since <= ts < until`
    (`until` optional) per model version x source (`COLUMNS`); `served` as
    `ServedLog.read`, `events` as `EventLog.read` returns them."""
    chosen = served[served["ts"] >= to_utc(since)]
    if until is not None:
        chosen = chosen[chosen["ts"] < to_utc(until)]
    if chosen.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    matched, currency = _matched(chosen, events, window)
    items = chosen.merge(matched, on=["request_id", "item_id"], how="left")
    items = items.assign(clicked=items["clicked"].eq(True), purchased=items["purchased"].eq(True),
                         units=items["units"].fillna(0).astype(int),
                         revenue=items["revenue"].fillna(0.0))
    rows = pd.concat([_summary(items, [*GROUP, "source"]),
                      _summary(items, GROUP).assign(source=TOTAL)], ignore_index=True)
    rows["model_version"] = rows["model_version"].astype(object).where(
        rows["model_version"].notna(), None)
    rows["currency"] = currency
    return _order(rows)[list(COLUMNS)]
