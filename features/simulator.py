"""A seeded market simulator of a digital-pattern shop selling on three channels.

The simulator draws a catalog, a hidden demand model, a price history with past price
experiments, and the behavioural events that model produces. Everything follows from
`np.random.default_rng(seed)`: the same arguments give the same tables, byte for byte.

Demand (hidden truth, one row per item x channel in `SimulatedMarket.truth`). The expected
number of units sold per day at price `p` on day index `t` (days counted from `start`) is
semi-log (exponential) in price:

    base_daily_units * exp(-elasticity * (p / reference_price - 1))
        * (1 + seasonal_amplitude * cos(2 * pi * (t - seasonal_peak_day) / 365))

`base_daily_units` (the expected units at the reference price, before seasonality) includes
the channel's demand multiplier. `elasticity` is the point price elasticity at the reference
price, |d ln q / d ln p| at p = reference_price (at price p it is elasticity * p /
reference_price): an item-level value drawn uniformly in [0.8, 2.5] plus the channel's
elasticity shift (web +0, etsy +0.15, amazon +0.3), kept within [0.8, 2.8]. The profit of a
unit sold at `p` is `p * (1 - fee_percent / 100) - fee_fixed - unit_cost`, so expected profit
`(p * (1 - f) - c) * q(p)` with `f = fee_percent / 100` and `c = unit_cost + fee_fixed` is
maximised where `1 - f - (p * (1 - f) - c) * elasticity / reference_price = 0`, that is at

    optimal_price = (unit_cost + fee_fixed) / (1 - fee_percent / 100)
                    + reference_price / elasticity

which is the truth table's `optimal_price` (rounded to cents). Seasonality scales demand and
does not move it; no guardrail bounds it, though it always lies within the catalog's
`min_price` and `max_price` (2.5 x `reference_price`). The seasonal peak follows the
category (knitting and crochet peak in autumn, quilting in winter, ...).

Prices. Each item x channel has a list price (`base_price` in the truth): `reference_price`
times an item-level list factor drawn uniformly in [0.5, 0.9] (the shop prices below the
demand curve's reference) times the channel markup (web 1.00, etsy 1.05, amazon 1.10),
rounded to an x.49 or x.99 ending and kept at or above the item's `min_price`. With these
draws `optimal_price / base_price` spreads on both sides of 1 (about 0.6 / 0.9 / 1.45 at the
10% / 50% / 90% quantiles): some list prices are too high, others too low. Now and then
(1 + Poisson(days / 90) episodes per row) the shop ran a price experiment: for 7 to 28 days
the price was the list price times one of 0.7, 0.8, 0.9, 1.1, 1.2 or 1.35 (same rounding),
then it went back. Prices never go below the item's `min_price`. The price of every item x
channel x day is kept in `SimulatedMarket.prices`; the catalog's `current_price` is the web
price on the last day.

Purchases. Units sold per item x channel x day are Poisson with the expected units above, at
that day's price; each unit is one `purchase` event of quantity 1 at that price.

Users. Each user has a Dirichlet taste over the six categories and a log-normal activity; a
session of an item of category `c` goes to a user drawn with probability proportional to
`activity * taste[c]`. 15% of sessions are guests (no user id).

Funnel. Every purchase has its own session: views of the item and of 1 to 4 other items
(mostly of the same category), then `add_to_cart` of the item, then `purchase`, a few seconds
to minutes apart on the same UTC day. There are 2.5 abandoned sessions per purchasing one,
drawn in proportion to demand before price (base units times seasonality): 1 to 4 views,
sometimes an `add_to_cart` of the first-interest item, sometimes followed by a
`remove_from_cart`, never a purchase. Every event carries the channel price of its item on its
day. About 2% of purchases of printed items are returned 3 to 20 days later (a `return` event
of quantity 1 at the purchase price, in a session of its own); returns that would fall after
the simulated period are dropped.

Hidden truth is everything in `truth` (demand parameters, channel demand multipliers and
elasticity shifts, optimal prices) and the user tastes; the channels file holds only the
public fee schedule.
"""

import os
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features.event_log import EventLog, write_parquet_atomic
from features.progress import stages
from features.schemas import CATALOG_COLUMNS, EVENT_TYPES, validate_catalog, validate_events


@dataclass(frozen=True)
class Channel:
    """A sales channel: its public fees and its hidden demand parameters."""

    channel: str
    fee_percent: float
    fee_fixed: float
    demand_multiplier: float
    elasticity_shift: float
    price_markup: float


CHANNEL_SPECS: tuple[Channel, ...] = (
    Channel("web", 2.9, 0.30, demand_multiplier=1.0, elasticity_shift=0.0, price_markup=1.00),
    Channel("etsy", 6.5, 0.20, demand_multiplier=0.85, elasticity_shift=0.15, price_markup=1.05),
    Channel("amazon", 15.0, 0.0, demand_multiplier=0.6, elasticity_shift=0.3, price_markup=1.10),
)


def _channel_table() -> pd.DataFrame:
    return pd.DataFrame([asdict(c) for c in CHANNEL_SPECS])


CHANNELS = _channel_table()  # for reading; the simulator builds its own copy from CHANNEL_SPECS
PUBLIC_CHANNEL_COLUMNS = ["channel", "fee_percent", "fee_fixed"]

CATEGORIES: tuple[str, ...] = (
    "sewing", "knitting", "crochet", "quilting", "embroidery", "surface design",
)
# Day of year (0 = Jan 1) when each category's demand peaks.
CATEGORY_PEAK_DAY: tuple[int, ...] = (75, 315, 300, 20, 335, 140)
DESIGNERS: tuple[str, ...] = (
    "Ada Bloom", "Bea Hart", "Cleo Marsh", "Dora Finch", "Edie Lane", "Flora Quill",
    "Greta Moss", "Hazel Pike", "Iris Vale", "June Brook", "Kit Rowan", "Lena Frost",
    "Mira Stone", "Nell Ashby", "Opal Reed", "Pippa West", "Rosa Glenn", "Sadie Wren",
    "Tess Holt", "Vera Lark",
)
FORMATS: tuple[str, ...] = ("PDF", "printed")
PDF_SHARE = 0.75
PRICE_FACTORS: tuple[float, ...] = (0.7, 0.8, 0.9, 1.1, 1.2, 1.35)
ITEM_ELASTICITY_RANGE = (0.8, 2.5)  # item-level point elasticity at the reference price
ELASTICITY_BOUNDS = (0.8, 2.8)  # item elasticity plus channel shift is clipped to this
LIST_PRICE_FACTOR_RANGE = (0.5, 0.9)  # the shop's web list price / the item's reference price
CURRENCY = "USD"
DAYS_PER_YEAR = 365
SECONDS_PER_DAY = 86_400
GUEST_SHARE = 0.15
SAME_CATEGORY_SHARE = 0.8
ABANDONED_PER_PURCHASE = 2.5
ABANDONED_CART_SHARE = 0.35
CART_REMOVAL_SHARE = 0.4
PRINTED_RETURN_RATE = 0.02
MAX_OTHER_VIEWS = 4
MAX_GAP_SECONDS = 240
MAX_SESSION_SECONDS = 1_500  # > (MAX_OTHER_VIEWS + 2) * MAX_GAP_SECONDS

_VIEW, _CART, _REMOVE, _PURCHASE, _RETURN = (
    EVENT_TYPES.index(name)
    for name in ("view", "add_to_cart", "remove_from_cart", "purchase", "return")
)


@dataclass
class SimulatedMarket:
    """A simulated shop: canonical events and catalog, public fees, and the hidden truth."""

    events: pd.DataFrame
    catalog: pd.DataFrame
    channels: pd.DataFrame
    truth: pd.DataFrame
    start: date
    prices: pd.DataFrame  # item_id, channel, day, price: the price of every item x channel x day


@dataclass
class _Demand:
    """The first half of a simulation: catalog, truth, prices and units sold (rows x days)."""

    catalog: pd.DataFrame
    truth: pd.DataFrame
    item_category: np.ndarray
    item_printed: np.ndarray
    prices: np.ndarray
    units: np.ndarray
    browse_weight: np.ndarray


def _demand(base, elasticity, reference_price, amplitude, peak_day, price, day) -> np.ndarray:
    season = 1.0 + amplitude * np.cos(2.0 * np.pi * (day - peak_day) / DAYS_PER_YEAR)
    return base * np.exp(-elasticity * (price / reference_price - 1.0)) * season


def expected_daily_units(
    truth: pd.DataFrame, price: np.ndarray | float, day: int | np.ndarray
) -> np.ndarray:
    """True expected units per day of each truth row at `price` on day index `day`.

    `price` and `day` broadcast against the rows (scalars or arrays of one value per row);
    arrays of shape (rows, k) evaluate k points per row.
    """
    price, day = np.asarray(price, dtype=float), np.asarray(day, dtype=float)
    shape = (len(truth),) + (1,) * (max(price.ndim, day.ndim, 1) - 1)
    columns = ("base_daily_units", "elasticity", "reference_price", "seasonal_amplitude",
               "seasonal_peak_day")
    base, elasticity, reference, amplitude, peak = (
        truth[c].to_numpy(dtype=float).reshape(shape) for c in columns)
    return _demand(base, elasticity, reference, amplitude, peak, price=price, day=day)


def _charm_price(price: np.ndarray) -> np.ndarray:
    """The nearest price ending in .49 or .99 (at least 0.49)."""
    return np.round(np.maximum(np.round(2.0 * (price + 0.01)) / 2.0 - 0.01, 0.49), 2)


def _charm_price_at_least(price: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """`_charm_price(price)`, or the lowest .49/.99 price not below `floor` if it is lower."""
    lowest = np.round(np.ceil(2.0 * (floor + 0.01) - 1e-9) / 2.0 - 0.01, 2)
    return np.maximum(_charm_price(price), lowest)


def _draw_catalog(rng: np.random.Generator, items: int):
    """Item attributes and the catalog's price bounds (current_price is filled in later)."""
    category = rng.integers(0, len(CATEGORIES), items)
    designer = rng.integers(0, len(DESIGNERS), items)
    printed = rng.random(items) >= PDF_SHARE
    unit_cost = np.round(
        np.where(printed, rng.uniform(2.5, 6.0, items), rng.uniform(0.10, 0.50, items)), 2
    )
    reference_price = np.round(
        np.where(printed, rng.uniform(12.0, 30.0, items), rng.uniform(4.0, 15.0, items)), 2
    )
    width = max(4, len(str(items)))
    item_ids = np.array([f"P{n:0{width}d}" for n in range(1, items + 1)], dtype=object)
    titles = [
        f"{DESIGNERS[d]} {CATEGORIES[c].capitalize()} pattern {n} ({FORMATS[int(p)]})"
        for n, (d, c, p) in enumerate(zip(designer, category, printed, strict=True), start=1)
    ]
    catalog = pd.DataFrame({
        "item_id": item_ids,
        "title": titles,
        "category": np.array(CATEGORIES, dtype=object)[category],
        "unit_cost": unit_cost,
        "current_price": np.nan,
        "currency": CURRENCY,
        "min_price": np.round(unit_cost * 1.25 + 0.5, 2),
        "max_price": np.round(reference_price * 2.5, 2),
    })
    return catalog, category, designer, printed, reference_price


def _draw_truth(rng, catalog, category, designer, printed, reference_price, start: date):
    """The hidden demand parameters, one row per item x channel (item-major order)."""
    items, n_channels = len(catalog), len(CHANNEL_SPECS)
    base_units = rng.lognormal(np.log(0.17), 0.7, items) * np.where(printed, 0.6, 1.0)
    item_elasticity = rng.uniform(*ITEM_ELASTICITY_RANGE, items)
    amplitude = rng.uniform(0.05, 0.35, items)
    list_factor = rng.uniform(*LIST_PRICE_FACTOR_RANGE, items)
    start_day_of_year = start.timetuple().tm_yday - 1
    peak_of_year = np.array(CATEGORY_PEAK_DAY)[category] + np.round(rng.normal(0, 15, items))
    peak_day = np.mod(peak_of_year - start_day_of_year, DAYS_PER_YEAR).astype(int)

    item = np.repeat(np.arange(items), n_channels)
    chan = np.tile(np.arange(n_channels), items)
    spec = _channel_table().iloc[chan].reset_index(drop=True)
    elasticity = np.clip(item_elasticity[item] + spec["elasticity_shift"].to_numpy(),
                         *ELASTICITY_BOUNDS)
    unit_cost = catalog["unit_cost"].to_numpy()[item]
    fee_rate = spec["fee_percent"].to_numpy() / 100.0
    fee_fixed = spec["fee_fixed"].to_numpy()
    min_price = catalog["min_price"].to_numpy()[item]
    base_price = _charm_price_at_least(
        reference_price[item] * list_factor[item] * spec["price_markup"].to_numpy(), min_price
    )
    optimal = (unit_cost + fee_fixed) / (1.0 - fee_rate) + reference_price[item] / elasticity
    return pd.DataFrame({
        "item_id": catalog["item_id"].to_numpy()[item],
        "channel": spec["channel"].to_numpy(dtype=object),
        "category": catalog["category"].to_numpy()[item],
        "designer": np.array(DESIGNERS, dtype=object)[designer[item]],
        "format": np.array(FORMATS, dtype=object)[printed[item].astype(int)],
        "base_daily_units": base_units[item] * spec["demand_multiplier"].to_numpy(),
        "elasticity": elasticity,
        "reference_price": reference_price[item],
        "seasonal_amplitude": amplitude[item],
        "seasonal_peak_day": peak_day[item],
        "unit_cost": unit_cost,
        "fee_percent": spec["fee_percent"].to_numpy(),
        "fee_fixed": fee_fixed,
        "base_price": base_price,
        "optimal_price": np.round(optimal, 2),
    })


def _draw_prices(rng: np.random.Generator, truth: pd.DataFrame, min_price: np.ndarray,
                 days: int) -> np.ndarray:
    """Price of each truth row on each day: list price, with past experiment episodes."""
    rows = len(truth)
    base = truth["base_price"].to_numpy()
    prices = np.repeat(base[:, None], days, axis=1)
    episodes = 1 + rng.poisson(days / 90.0, rows)
    total = int(episodes.sum())
    first = rng.integers(0, days, total)
    length = rng.integers(7, 29, total)
    factor = np.array(PRICE_FACTORS)[rng.integers(0, len(PRICE_FACTORS), total)]
    row = np.repeat(np.arange(rows), episodes)
    experiment = _charm_price_at_least(base[row] * factor, min_price[row])
    for r, a, n, p in zip(row.tolist(), first.tolist(), length.tolist(), experiment.tolist(),
                          strict=True):
        prices[r, a:a + n] = p
    return prices


def _simulate_demand(rng: np.random.Generator, days: int, items: int, start: date) -> _Demand:
    catalog, category, designer, printed, reference_price = _draw_catalog(rng, items)
    truth = _draw_truth(rng, catalog, category, designer, printed, reference_price, start)
    item_min_price = catalog["min_price"].to_numpy()
    row_min_price = np.repeat(item_min_price, len(CHANNEL_SPECS))
    prices = _draw_prices(rng, truth, row_min_price, days)
    day = np.arange(days)[None, :]
    expected = expected_daily_units(truth, prices, day)
    units = rng.poisson(expected)
    browse_weight = expected_daily_units(truth, truth["reference_price"].to_numpy()[:, None], day)
    web = [c.channel for c in CHANNEL_SPECS].index("web")
    catalog["current_price"] = prices[web::len(CHANNEL_SPECS), -1]
    return _Demand(catalog, truth, category, printed, prices, units, browse_weight)


def _other_items(rng: np.random.Generator, focus: np.ndarray, item_category: np.ndarray):
    """For each focus item, another item, of the same category in most cases."""
    items = len(item_category)
    if items == 1:
        return focus.copy()
    order = np.argsort(item_category, kind="stable")
    size = np.bincount(item_category, minlength=len(CATEGORIES))
    offset = np.concatenate([[0], np.cumsum(size)[:-1]])
    position = np.empty(items, dtype=np.int64)
    position[order] = np.arange(items) - offset[item_category[order]]

    category = item_category[focus]
    same = (rng.random(len(focus)) < SAME_CATEGORY_SHARE) & (size[category] > 1)
    pick_any = rng.integers(0, items - 1, len(focus))
    any_item = pick_any + (pick_any >= focus)
    pick_same = rng.integers(0, np.maximum(size[category] - 1, 1))
    pick_same = pick_same + (pick_same >= position[focus])
    same_item = order[np.minimum(offset[category] + pick_same, items - 1)]
    return np.where(same, same_item, any_item)


def _assign_users(rng: np.random.Generator, category: np.ndarray, users: int) -> np.ndarray:
    """A user index for each session by activity x category taste, -1 for guests."""
    taste = rng.dirichlet(np.full(len(CATEGORIES), 0.6), users)
    activity = rng.lognormal(0.0, 1.0, users)
    assigned = np.full(len(category), -1, dtype=np.int64)
    for c in range(len(CATEGORIES)):
        sessions = np.flatnonzero(category == c)
        weight = activity * taste[:, c] + 1e-12
        assigned[sessions] = rng.choice(users, size=len(sessions), p=weight / weight.sum())
    assigned[rng.random(len(category)) < GUEST_SHARE] = -1
    return assigned


def _numbered(prefix: str, numbers: np.ndarray, min_width: int) -> np.ndarray:
    width = max(min_width, len(str(int(numbers.max())))) if len(numbers) else min_width
    return np.array([f"{prefix}{n:0{width}d}" for n in numbers.tolist()], dtype=object)


def _build_events(rng: np.random.Generator, demand: _Demand, users: int, seed: int,
                  start: date) -> pd.DataFrame:
    """Sessions (purchasing and abandoned), their events, and returns, as canonical events."""
    n_channels = len(CHANNEL_SPECS)
    rows, days = demand.units.shape
    items = rows // n_channels

    # Sessions: one per unit sold, then abandoned ones drawn by demand before price.
    sold = np.repeat(np.arange(rows * days), demand.units.ravel())
    n_purchase = len(sold)
    n_abandoned = round(ABANDONED_PER_PURCHASE * n_purchase)
    weight = demand.browse_weight.ravel()
    browsed = rng.choice(rows * days, size=n_abandoned, p=weight / weight.sum())
    cell = np.concatenate([sold, browsed])
    sessions = len(cell)
    purchasing = np.arange(sessions) < n_purchase
    row, day = cell // days, cell % days
    item, channel = row // n_channels, row % n_channels
    category = demand.item_category[item]

    n_other = np.where(purchasing, rng.integers(1, MAX_OTHER_VIEWS + 1, sessions),
                       rng.integers(0, MAX_OTHER_VIEWS, sessions))
    if items == 1:
        n_other[:] = 0
    n_views = n_other + 1
    focus_position = rng.integers(0, n_views)
    carted = purchasing | (rng.random(sessions) < ABANDONED_CART_SHARE)
    removed = ~purchasing & carted & (rng.random(sessions) < CART_REMOVAL_SHARE)
    others = _other_items(rng, np.repeat(item, MAX_OTHER_VIEWS), demand.item_category)
    others = others.reshape(sessions, MAX_OTHER_VIEWS)
    user = _assign_users(rng, category, users)
    session_start = day * SECONDS_PER_DAY + rng.integers(
        0, SECONDS_PER_DAY - MAX_SESSION_SECONDS, sessions
    )

    # Events of the sessions: views, then add_to_cart, then purchase or remove_from_cart.
    n_events = n_views + carted + removed + purchasing
    session = np.repeat(np.arange(sessions), n_events)
    first = np.cumsum(n_events) - n_events
    seq = np.arange(len(session)) - first[session]
    views = n_views[session]
    kind = np.where(seq < views, _VIEW, np.where(
        seq == views, _CART, np.where(purchasing[session], _PURCHASE, _REMOVE)))
    position = focus_position[session]
    other_slot = np.clip(seq - (seq > position), 0, MAX_OTHER_VIEWS - 1)
    is_other = (kind == _VIEW) & (seq != position)
    ev_item = np.where(is_other, others[session, other_slot], item[session])
    ev_channel = channel[session]
    ev_day = day[session]
    ev_price = demand.prices[ev_item * n_channels + ev_channel, ev_day]
    gap = np.where(seq == 0, 0, rng.integers(5, MAX_GAP_SECONDS + 1, len(session)))
    elapsed = np.cumsum(gap)
    ev_seconds = session_start[session] + elapsed - elapsed[first][session]

    # Returns of printed items, in sessions of their own.
    purchase_row, purchase_day = row[:n_purchase], day[:n_purchase]
    returned = demand.item_printed[purchase_row // n_channels] & (
        rng.random(n_purchase) < PRINTED_RETURN_RATE)
    return_day = purchase_day + rng.integers(3, 21, n_purchase)
    return_second = rng.integers(0, SECONDS_PER_DAY, n_purchase)
    returned &= return_day < days
    source = np.flatnonzero(returned)
    n_returns = len(source)
    ret_seconds = return_day[source] * SECONDS_PER_DAY + return_second[source]

    # Session ids in chronological order, then event ids in chronological order.
    all_start = np.concatenate([session_start, ret_seconds])
    session_rank = np.empty(sessions + n_returns, dtype=np.int64)
    session_rank[np.lexsort((np.arange(len(all_start)), all_start))] = np.arange(len(all_start))
    session_ids = _numbered("S", session_rank + 1, 6)

    ev_session = np.concatenate([session, sessions + np.arange(n_returns)])
    seconds = np.concatenate([ev_seconds, ret_seconds])
    sequence = np.concatenate([seq, np.zeros(n_returns, dtype=np.int64)])
    order = np.lexsort((sequence, session_rank[ev_session], seconds))
    kind = np.concatenate([kind, np.full(n_returns, _RETURN)])[order]
    ev_item = np.concatenate([ev_item, item[source]])[order]
    ev_channel = np.concatenate([ev_channel, channel[source]])[order]
    ev_price = np.concatenate([ev_price, demand.prices[row[source], day[source]]])[order]
    ev_user = np.concatenate([user[session], user[source]])[order]
    ev_session, seconds = ev_session[order], seconds[order]

    user_ids = np.array([f"U{n:05d}" for n in range(1, users + 1)] + [None], dtype=object)
    origin = np.datetime64(start.isoformat(), "us")
    ts = origin + (seconds * 1_000_000).astype("timedelta64[us]")
    count = len(order)
    return pd.DataFrame({
        "event_id": _numbered(f"sim-{seed}-", np.arange(1, count + 1), 7),
        "event_type": np.array(EVENT_TYPES, dtype=object)[kind],
        "user_id": user_ids[ev_user],
        "session_id": session_ids[ev_session],
        "item_id": demand.catalog["item_id"].to_numpy()[ev_item],
        "ts": pd.Series(ts).dt.tz_localize("UTC"),
        "quantity": np.ones(count, dtype=np.int32),
        "unit_price": ev_price.astype(float),
        "currency": np.full(count, CURRENCY, dtype=object),
        "channel": np.array([c.channel for c in CHANNEL_SPECS], dtype=object)[ev_channel],
    })


def _market(demand: _Demand, events: pd.DataFrame, start: date) -> SimulatedMarket:
    rows, days = demand.prices.shape
    prices = pd.DataFrame({
        "item_id": np.repeat(demand.truth["item_id"].to_numpy(), days),
        "channel": np.repeat(demand.truth["channel"].to_numpy(), days),
        "day": np.tile(np.arange(days), rows),
        "price": demand.prices.ravel(),
    })
    channels = _channel_table()[PUBLIC_CHANNEL_COLUMNS]
    return SimulatedMarket(events, demand.catalog, channels, demand.truth, start, prices)


def _check_sizes(days: int, users: int, items: int, seed: int) -> None:
    for name, value in (("days", days), ("users", users), ("items", items)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")


def simulate_market(days: int, users: int, items: int, seed: int,
                    start: date = date(2025, 1, 1)) -> SimulatedMarket:
    """Simulate `days` days of a shop of `items` items and `users` users from `start`."""
    _check_sizes(days, users, items, seed)
    demand_rng, session_rng = np.random.default_rng(seed).spawn(2)
    demand = _simulate_demand(demand_rng, days, items, start)
    events = _build_events(session_rng, demand, users, seed, start)
    return _market(demand, events, start)


def _write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        frame.to_csv(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_validated(market: SimulatedMarket, out_dir: Path) -> dict[str, int]:
    out_dir = Path(out_dir)
    appended = EventLog(out_dir / "events").append(market.events)
    _write_csv_atomic(market.catalog[list(CATALOG_COLUMNS)], out_dir / "catalog.csv")
    _write_csv_atomic(market.channels[PUBLIC_CHANNEL_COLUMNS], out_dir / "channels.csv")
    truth = market.truth.assign(start=market.start)
    table = pa.Table.from_pandas(truth, preserve_index=False)
    write_parquet_atomic(table, out_dir / "ground_truth.parquet")
    by_type = market.events["event_type"].value_counts()
    counts = {name: int(by_type.get(name, 0)) for name in EVENT_TYPES}
    counts.update(events=len(market.events), events_written=appended.written,
                  items=len(market.catalog), channels=len(market.channels))
    return counts


def write_simulation(market: SimulatedMarket, out_dir: Path) -> dict[str, int]:
    """Validate and write a market to `out_dir`; return event counts by type, items, channels.

    Writes `events/` (the event log), `catalog.csv`, `channels.csv` (public fees) and
    `ground_truth.parquet` (the truth table with the simulation `start`), each atomically.
    """
    market = replace(market, events=validate_events(market.events),
                     catalog=validate_catalog(market.catalog))
    return _write_validated(market, out_dir)


def simulate_to_dir(days: int, users: int, items: int, seed: int, out_dir: Path,
                    start: date = date(2025, 1, 1)) -> dict[str, int]:
    """Simulate a market and write it to `out_dir` with a progress display; return counts."""
    _check_sizes(days, users, items, seed)
    names = ["simulating demand", "building sessions", "validating", "writing"]
    with stages(names) as done:
        demand_rng, session_rng = np.random.default_rng(seed).spawn(2)
        demand = _simulate_demand(demand_rng, days, items, start)
        done()
        market = _market(demand, _build_events(session_rng, demand, users, seed, start), start)
        done()
        market = replace(market, events=validate_events(market.events),
                         catalog=validate_catalog(market.catalog))
        done()
        counts = _write_validated(market, out_dir)
        done()
    return counts
