"""Import of the UCI Online Retail export into canonical events and a derived catalog.

Rules (the file format is the contract, not its date range):
- an invoice number of digits is a sale: each line is a `purchase` event;
- an invoice number starting with `C` is a cancellation: each line (negative quantity) is a
  `return` event of the absolute quantity;
- lines without a CustomerID are guest events (`user_id` empty); the invoice is the session;
- `InvoiceDate` is UK local time and is converted to UTC;
- the event id is `or-<InvoiceNo>-<StockCode>-<n>`, n counting repeats of the stock code
  within the invoice in file order, so a later export of overlapping months gives the same ids;
- rejected, with a reason each: stock codes that are not products (postage, fees, discounts,
  vouchers, manual adjustments: a product code starts with five digits or `DCGS`), other
  invoice types (`A`, bad-debt adjustments), non-positive prices, sale lines with a
  non-positive quantity, cancellation lines with a positive one, unreadable fields.

The catalog holds every imported item: its latest description and sale price (latest by time,
then file order), its category by `category_for`, `min_price` the lowest price it sold at,
no `unit_cost` or `max_price` (the export has neither), currency GBP.
"""

import gzip
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from features.errors import InputError

RAW_COLUMNS = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)
SHOP_TIMEZONE = "Europe/London"
CURRENCY = "GBP"
CHANNEL = "web"
PRODUCT_CODE = re.compile(r"^(\d{5}|DCGS)")

# First rule whose keyword appears as a word of the upper-cased description wins.
CATEGORY_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("christmas", ("CHRISTMAS", "XMAS", "ADVENT", "SANTA", "REINDEER", "SNOWFLAKE")),
    ("bags", ("BAG", "BAGS", "SHOPPER", "TOTE", "PURSE")),
    ("lighting", ("LIGHT", "LIGHTS", "T-LIGHT", "CANDLE", "CANDLES", "LANTERN", "LAMP")),
    ("kitchen", ("MUG", "CUP", "CUPS", "PLATE", "PLATES", "BOWL", "TEA", "CAKE", "LUNCH",
                 "JAR", "JAM", "PANTRY", "BOTTLE", "BAKING", "NAPKINS", "TRAY", "SPOON", "COFFEE",
                 "JUG")),
    ("stationery", ("CARD", "CARDS", "WRAP", "PAPER", "NOTEBOOK", "PEN", "PENCIL",
                    "PENCILS", "STICKER", "STICKERS", "ENVELOPE", "CALENDAR")),
    ("toys", ("TOY", "DOLLY", "GAME", "PUZZLE", "CHILDRENS", "SPACEBOY", "DOLL", "BALLOON")),
    ("garden", ("GARDEN", "PLANT", "PLANTER", "BIRD", "WATERING")),
    ("storage", ("BOX", "BOXES", "TIN", "TINS", "DRAWER", "BASKET", "HOLDER", "CASE", "CASES")),
    ("decoration", ("SIGN", "HANGING", "DECORATION", "FRAME", "BUNTING", "DOORMAT", "CLOCK",
                    "HEART", "WREATH", "ORNAMENT", "GARLAND", "CUSHION", "MIRROR")),
)
OTHER_CATEGORY = "other"


def category_for(description: str) -> str:
    """Category of an item from its description, by the first matching `CATEGORY_RULES`."""
    words = set(description.upper().split())
    for category, keywords in CATEGORY_RULES:
        if words.intersection(keywords):
            return category
    return OTHER_CATEGORY


@dataclass
class ConversionReport:
    """Counts of one conversion: rows read, events by type, rejected rows by reason."""

    rows_read: int = 0
    events_by_type: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)


def read_online_retail(path: Path) -> pd.DataFrame:
    """Read the raw export (CSV, optionally gzip) as strings, checking its columns."""
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        frame = pd.read_csv(handle, dtype=str, keep_default_na=False)
    missing = [c for c in RAW_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: not an Online Retail export, missing column(s) {missing}")
    return frame


def _rejection_reasons(raw: pd.DataFrame, quantity, price, ts) -> pd.Series:
    """The first reason each row is rejected for, or None for rows that become events."""
    invoice, code = raw["InvoiceNo"].str.strip(), raw["StockCode"].str.strip()
    is_cancel = invoice.str.startswith("C")
    checks = [
        (quantity.isna(), "unreadable Quantity"),
        (price.isna(), "unreadable UnitPrice"),
        (ts.isna(), "unreadable InvoiceDate"),
        (~(invoice.str.fullmatch(r"\d+") | is_cancel), "not a sale or cancellation invoice"),
        (~code.str.match(PRODUCT_CODE), "service stock code (postage, fee, discount, voucher)"),
        (price <= 0, "non-positive UnitPrice"),
        (~is_cancel & (quantity <= 0), "sale line with non-positive Quantity"),
        (is_cancel & (quantity >= 0), "cancellation line with non-negative Quantity"),
    ]
    reasons = pd.Series(None, index=raw.index, dtype=object)
    for failed, reason in reversed(checks):
        reasons = reasons.mask(failed.fillna(True), reason)
    return reasons


def convert_online_retail(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, ConversionReport]:
    """Turn raw export rows into (canonical events, catalog, report); deterministic."""
    report = ConversionReport(rows_read=len(raw))
    quantity = pd.to_numeric(raw["Quantity"], errors="coerce")
    price = pd.to_numeric(raw["UnitPrice"], errors="coerce")
    local = pd.to_datetime(raw["InvoiceDate"], format="%Y-%m-%d %H:%M:%S", errors="coerce")
    ts = local.dt.tz_localize(SHOP_TIMEZONE, ambiguous=True, nonexistent="shift_forward")
    reasons = _rejection_reasons(raw, quantity, price, ts)
    report.rejected.update(reasons.dropna().tolist())

    kept = reasons.isna()
    rows = raw[kept]
    invoice, code = rows["InvoiceNo"].str.strip(), rows["StockCode"].str.strip()
    repeat = rows.groupby([invoice, code], sort=False).cumcount().astype(str)
    customer = rows["CustomerID"].str.strip().str.replace(r"\.0$", "", regex=True)
    events = pd.DataFrame(
        {
            "event_id": "or-" + invoice + "-" + code + "-" + repeat,
            "event_type": invoice.str.startswith("C").map({True: "return", False: "purchase"}),
            "user_id": customer.where(customer != "", None),
            "session_id": invoice,
            "item_id": code,
            "ts": ts[kept].dt.tz_convert("UTC"),
            "quantity": quantity[kept].abs().astype("int64"),
            "unit_price": price[kept],
            "currency": CURRENCY,
            "channel": CHANNEL,
        }
    )
    report.events_by_type.update(events["event_type"].tolist())
    catalog = _derive_catalog(events, rows["Description"].str.strip())
    return events.reset_index(drop=True), catalog, report


def _derive_catalog(events: pd.DataFrame, descriptions: pd.Series) -> pd.DataFrame:
    frame = events.assign(description=descriptions, order=range(len(events)))
    frame = frame.sort_values(["ts", "order"], kind="stable")
    sales = frame[frame["event_type"] == "purchase"]
    titled = frame[frame["description"] != ""]
    by_item = frame.groupby("item_id", sort=True)
    catalog = pd.DataFrame(
        {
            "title": titled.groupby("item_id")["description"].last(),
            "current_price": sales.groupby("item_id")["unit_price"].last(),
            "min_price": sales.groupby("item_id")["unit_price"].min(),
        },
        index=pd.Index(sorted(by_item.groups), name="item_id"),
    )
    # Items seen only in cancellations: their price is the one they were refunded at.
    refunded = by_item["unit_price"].last()
    catalog["current_price"] = catalog["current_price"].fillna(refunded)
    catalog["min_price"] = catalog["min_price"].fillna(catalog["current_price"])
    catalog["title"] = catalog["title"].fillna("")
    catalog = catalog.reset_index()
    catalog["category"] = catalog["title"].map(category_for)
    catalog["unit_cost"] = None
    catalog["currency"] = CURRENCY
    catalog["max_price"] = None
    return catalog[
        ["item_id", "title", "category", "unit_cost", "current_price", "currency", "min_price",
         "max_price"]
    ]
