"""A seeded market simulator of a digital-pattern shop selling on three channels.

The simulator draws a catalog, a hidden demand model of one of five families, a price history
like a real shop's, and the behavioural events that model produces. Everything follows from
`np.random.default_rng(seed)`: the same arguments give the same tables, byte for byte. The
same seed with another family gives the same catalog, seasonality and sensitivity ranks, and
another demand curve, list prices and events. docs/simulator.md has the sources.

Demand (hidden truth, one row per item x channel in `SimulatedMarket.truth`). The expected
number of units sold per day at price `p` on day index `t` (days counted from `start`) is

    base_daily_units * shape(p / reference_price)
        * (1 + seasonal_amplitude * cos(2 * pi * (t - seasonal_peak_day) / 365))

with shape(1) = 1, so `base_daily_units` is the expected units at the reference price before
seasonality. With x = p / reference_price and s = `price_sensitivity`, the families
(`simulate_market(..., family=...)`, one of DEMAND_FAMILIES) are:

- exponential (semi-log): shape = exp(-s * (x - 1)); point elasticity s * x;
- isoelastic (constant elasticity, log-log): shape = x ** -s; elasticity s at every price;
- logit (multinomial logit with an outside option): the market share
  sigma(a - s * x) = exp(a - s * x) / (1 + exp(a - s * x)) over its value at x = 1, the
  item's `reference_share` rho; a = s + ln(rho / (1 - rho)); elasticity s * x * (1 - share);
- linear: shape = max(0, 1 - s * (x - 1)), no demand above the choke price
  reference_price * (1 + 1 / s); elasticity s * x / (1 - s * (x - 1)).
- kinked (the kinked demand curve of oligopoly pricing: competitors match a price cut but
  not a rise): exponential with sensitivity s below the item's `kink_price` (where its
  competitors price it, one absolute price on every channel) and KINK_SENSITIVITY_RATIO * s
  (3 s) above it; elasticity s * x below the kink, 3 s * x above. A smooth price response
  fitted across the kink is wrong on both sides of it.

Every family's demand is non-negative and non-increasing in price. The truth's `elasticity` is
the point elasticity |d ln q / d ln p| at the reference price, comparable across families:
s for exponential, isoelastic and linear, s * (1 - rho) for logit, s or 3 s for kinked (the
side of the kink the reference price is on).

Price sensitivity. Each item draws a rank u, uniform in [0, 1], and each channel adds its
`sensitivity_shift` (web +0, etsy +0.15, amazon +0.3). Exponential and linear:
s = 0.6 + 2.6 * u + shift, in [0.6, 3.5]. Logit: s = 1.5 + 2.1 * u + shift, in [1.5, 3.9],
with rho uniform in [0.1, 0.6] per item (NaN in other families), so the elasticity spreads over
about [0.6, 3.5]. Kinked: s = 0.6 + 1.8 * u + shift below the kink, in [0.6, 2.7]; the kink
is the item's web optimum of that sensitivity alone (cost + reference_price / s) times a factor
uniform in [0.75, 1.25] per item (from the same per-item draw as the logit share), so about
a third of the offers have their profit optimum at the kink itself.
Some items of these three families are inelastic at the reference price (elasticity below 1:
raising the price from there raises revenue). Isoelastic demand has a finite profit optimum
only when s > 1, and then it is cost * s / (s - 1) whatever the reference price; with the
near-zero unit cost of a PDF an optimum within the catalog bounds needs s close to 1. So s is
calibrated: on the web row the optimum is put at (1.9 - 1.45 * u) x the reference price, the
excess s - 1 is scaled by (1 + shift) on the other channels, and s is then kept where the
optimum lies within [min_price + 0.01, max_price - 0.01] and s <= 3.5. Isoelastic elasticities
lie in (1, 3.5], most of them near 1 (median about 1.1, 95% below 1.5).

Optimal price. The profit of a unit sold at `p` is `p * (1 - fee_percent / 100) - fee_fixed
- unit_cost`; with cost = (unit_cost + fee_fixed) / (1 - fee_percent / 100) the expected
profit is proportional to (p - cost) * q(p), and its maximiser, `optimal_price` (rounded to
cents, no guardrail), is in closed form:

- exponential: cost + reference_price / s;
- isoelastic: cost * s / (s - 1);
- logit: cost + (1 + W(exp(a - s * cost / reference_price - 1))) * reference_price / s,
  W being Lambert's W (principal branch);
- linear: (cost + reference_price * (1 + s) / s) / 2, below the choke price;
- kinked: the kink price clipped to [cost + reference_price / (3 s), cost + reference_price /
  s] (the optimum of the branch above the kink, of the one below).

Seasonality scales demand and does not move the optimum; with these ranges it always lies
within the catalog's `min_price` and `max_price` (2.5 x `reference_price`).
`base_daily_units` is sized so that the web row sells a log-normal draw (median 0.3 a day,
sigma 0.7; 0.6x for printed items) at the web optimum before seasonality, whatever the family;
the channels multiply it (web 1.0, etsy 0.85, amazon 0.6). Reference prices are uniform in
[4, 15] (PDF) or [12, 30] (printed); the seasonal amplitude is uniform in [0.05, 0.35] and the
peak follows the category (knitting and crochet peak in autumn, quilting in winter, ...).

Prices. The shop's current list price (`base_price` in the truth) is the web optimum times an
item-level mispricing factor, log-uniform in [0.6, 1.65], times the channel markup (web 1.00,
etsy 1.05, amazon 1.10), rounded to an x.49 or x.99 ending and kept within the item's
`min_price` and `max_price`: some list prices are too high, others too low
(`optimal_price / base_price` is about 0.6 / 0.9 / 1.35 at the 10% / 50% / 90% quantiles for
exponential, lower for isoelastic, whose amazon optimum is far below the web one). The history
runs backwards from it:

- a quarter of the items (STATIC_SHARE, rounded) are never repriced on any channel: their
  price response cannot be identified from their own data;
- permanent list-price changes: Poisson(1 per year) per repriced item on all its channels at
  once, Poisson(0.5 per year) per repriced item x channel on one, on a uniform day, by a factor
  of 0.8, 0.9, 0.95, 1.05, 1.1, 1.2 or 1.25 (the list price before a change is the one after
  it divided by the factor); a repriced item without any change or episode gets one item-wide
  change;
- temporary tests and promotions: Poisson(1.5 per year) per repriced item, half of them on all
  channels and half on one, 7 to 28 days long and over before the last day, at the list price
  of their first day times one of 0.7, 0.8, 0.9, 1.1, 1.2 or 1.35; then the list price returns.

Every price is rounded to .49/.99 and kept within [`min_price`, `max_price`]; a change the
rounding would swallow moves one step (0.50) in its direction, or the other way where a bound
blocks it. Prices are therefore flat for long stretches (a median of about seven weeks between
changes of a repriced series in a year's history). The price of every item x channel x day is
kept in `SimulatedMarket.prices`; the last day's prices (the list prices) are each channel's
current price, in `SimulatedMarket.channel_prices`; the catalog's `current_price` is the web
one.

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

Files (`write_simulation`, `simulate_to_dir`, each written atomically): `events/` (the event
log), `catalog.csv`, `channels.csv` (the public fee schedule), `channel_prices.csv`
(CHANNEL_PRICES_FILE: item_id, channel, current_price) and `ground_truth.parquet` (the truth
table with the simulation `start`). Hidden truth is everything in `truth` (family, demand
parameters, channel demand multipliers and sensitivity shifts, elasticities, optimal prices)
and the user tastes. `expected_daily_units` computes true demand from the TRUTH_PARAMETERS
columns of the truth, for any mix of families.
"""

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.stats import poisson

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
    sensitivity_shift: float
    price_markup: float


CHANNEL_SPECS: tuple[Channel, ...] = (
    Channel("web", 2.9, 0.30, demand_multiplier=1.0, sensitivity_shift=0.0, price_markup=1.00),
    Channel("etsy", 6.5, 0.20, demand_multiplier=0.85, sensitivity_shift=0.15, price_markup=1.05),
    Channel("amazon", 15.0, 0.0, demand_multiplier=0.6, sensitivity_shift=0.3, price_markup=1.10),
)


def _channel_table() -> pd.DataFrame:
    return pd.DataFrame([asdict(c) for c in CHANNEL_SPECS])


CHANNELS = _channel_table()  # for reading; the simulator builds its own copy from CHANNEL_SPECS
PUBLIC_CHANNEL_COLUMNS = ["channel", "fee_percent", "fee_fixed"]

DemandFamily = Literal["exponential", "isoelastic", "logit", "linear", "kinked"]
DEMAND_FAMILIES: tuple[str, ...] = get_args(DemandFamily)
# The truth columns `expected_daily_units` reads: copy exactly these to evaluate true demand.
TRUTH_PARAMETERS: tuple[str, ...] = (
    "family", "price_sensitivity", "reference_share", "kink_price", "base_daily_units",
    "reference_price", "seasonal_amplitude", "seasonal_peak_day",
)
CHANNEL_PRICES_FILE = "channel_prices.csv"

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
# Expected web units a day at the web optimum, before seasonality: log-normal (median, sigma),
# times PRINTED_UNITS_FACTOR for printed items.
WEB_UNITS_AT_OPTIMUM = (0.3, 0.7)
PRINTED_UNITS_FACTOR = 0.6
# Item-level price sensitivity s (before the channel shift) of the families that draw it.
SENSITIVITY_RANGES: dict[str, tuple[float, float]] = {
    "exponential": (0.6, 3.2),
    "logit": (1.5, 3.6),
    "linear": (0.6, 3.2),
    "kinked": (0.6, 2.4),  # below the kink
}
REFERENCE_SHARE_RANGE = (0.1, 0.6)  # logit: the item's market share at the reference price
# Kinked: the competitors' price (the kink) / the item's web optimum of its sensitivity below
# the kink, drawn from the same per-item uniform as the logit share; the sensitivity above it:
KINK_RANGE = (0.75, 1.25)
KINK_SENSITIVITY_RATIO = 3.0
# Isoelastic: the web optimum targeted by s, as a fraction of the reference price; s at most:
ISOELASTIC_OPTIMUM_RANGE = (0.45, 1.9)
MAX_ISOELASTIC_SENSITIVITY = 3.5
# The shop's current web list price / the true web optimum (log-uniform): both sides of 1.
MISPRICING_RANGE = (0.6, 1.65)
# Price history: items never repriced, then per repriced item or row and per year of history:
STATIC_SHARE = 0.25
ITEM_LIST_CHANGES_PER_YEAR = 1.0  # permanent, item-wide (every channel, same factor)
CHANNEL_LIST_CHANGES_PER_YEAR = 0.5  # permanent, one channel
EPISODES_PER_YEAR = 1.5  # temporary tests and promotions of an item
EPISODE_ITEM_WIDE_SHARE = 0.5  # the share of them on every channel at once
EPISODE_DAYS = (7, 28)
LIST_CHANGE_FACTORS: tuple[float, ...] = (0.8, 0.9, 0.95, 1.05, 1.1, 1.2, 1.25)
PRICE_FACTORS: tuple[float, ...] = (0.7, 0.8, 0.9, 1.1, 1.2, 1.35)
CHARM_STEP = 0.5  # the distance between two .49/.99 prices
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
_EXPONENTIAL, _ISOELASTIC, _LOGIT, _LINEAR, _KINKED = (
    DEMAND_FAMILIES.index(name)
    for name in ("exponential", "isoelastic", "logit", "linear", "kinked")
)
_WEB = [c.channel for c in CHANNEL_SPECS].index("web")  # the row of an item's web channel
_MIN_RELATIVE_PRICE = 1e-9  # isoelastic demand at a zero price: finite, at this x


@dataclass
class SimulatedMarket:
    """A simulated shop: canonical events and catalog, public fees, and the hidden truth."""

    events: pd.DataFrame
    catalog: pd.DataFrame
    channels: pd.DataFrame
    truth: pd.DataFrame
    start: date
    prices: pd.DataFrame  # item_id, channel, day, price: the price of every item x channel x day
    channel_prices: pd.DataFrame  # item_id, channel, current_price: the prices on the last day


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


def _check_family(family: str) -> None:
    if family not in DEMAND_FAMILIES:
        raise ValueError(f"family must be one of {', '.join(DEMAND_FAMILIES)}, got {family!r}")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)), without overflow and with exact tails."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _logit_intercept(sensitivity: np.ndarray, share: np.ndarray) -> np.ndarray:
    """The logit utility intercept `a` that gives `share` at the reference price."""
    return sensitivity + np.log(share / (1.0 - share))


def _kinked_exponent(s: np.ndarray, kink: np.ndarray, x: np.ndarray | float) -> np.ndarray:
    """-log demand (up to a constant) of the kinked family at relative price `x`, the kink at
    relative price `kink`."""
    return (s * np.minimum(x, kink)
            + KINK_SENSITIVITY_RATIO * s * np.maximum(x - kink, 0.0))


def _shape(code: np.ndarray, s: np.ndarray, share: np.ndarray, kink: np.ndarray,
           x: np.ndarray) -> np.ndarray:
    """Demand at relative price `x` over demand at the reference price (all arrays one shape;
    `share` is read by the logit family, `kink`, the relative kink price, by the kinked)."""
    shape = np.empty(x.shape)
    for family, curve in (
        (_EXPONENTIAL, lambda s, share, kink, x: np.exp(-s * (x - 1.0))),
        (_ISOELASTIC, lambda s, share, kink, x: np.maximum(x, _MIN_RELATIVE_PRICE) ** -s),
        (_LOGIT,
         lambda s, share, kink, x: _sigmoid(_logit_intercept(s, share) - s * x) / share),
        (_LINEAR, lambda s, share, kink, x: np.maximum(0.0, 1.0 - s * (x - 1.0))),
        (_KINKED, lambda s, share, kink, x: np.exp(_kinked_exponent(s, kink, 1.0)
                                                   - _kinked_exponent(s, kink, x))),
    ):
        rows = code == family
        if rows.any():
            shape[rows] = curve(s[rows], share[rows], kink[rows], x[rows])
    return shape


def _family_codes(truth: pd.DataFrame) -> np.ndarray:
    """Each row's index in DEMAND_FAMILIES; exponential when the truth has no family column."""
    if "family" not in truth.columns:
        return np.full(len(truth), _EXPONENTIAL)
    names = truth["family"].to_numpy(dtype=object)
    codes = pd.Categorical(names, categories=list(DEMAND_FAMILIES)).codes.astype(np.int64)
    if (codes < 0).any():
        unknown = sorted({str(name) for name in names[codes < 0]})
        raise ValueError(f"family must be one of {', '.join(DEMAND_FAMILIES)}, got "
                         f"{', '.join(map(repr, unknown))}")
    return codes


def expected_daily_units(
    truth: pd.DataFrame, price: np.ndarray | float, day: int | np.ndarray
) -> np.ndarray:
    """True expected units per day of each truth row at `price` on day index `day`.

    `price` and `day` broadcast against the rows (scalars or arrays of one value per row);
    arrays of shape (rows, k) evaluate k points per row. Reads the TRUTH_PARAMETERS columns;
    a truth without `family` and `price_sensitivity` (the layout before demand families) is
    exponential with `price_sensitivity` = `elasticity`.
    """
    price, day = np.asarray(price, dtype=float), np.asarray(day, dtype=float)
    row_shape = (len(truth),) + (1,) * (max(price.ndim, day.ndim, 1) - 1)
    code = _family_codes(truth)
    legacy = "family" not in truth.columns and "price_sensitivity" not in truth.columns
    needed = ["elasticity" if legacy else "price_sensitivity", "base_daily_units",
              "reference_price", "seasonal_amplitude", "seasonal_peak_day"]
    if (code == _LOGIT).any():
        needed.append("reference_share")
    if (code == _KINKED).any():
        needed.append("kink_price")
    missing = [name for name in needed if name not in truth.columns]
    if missing:
        raise KeyError(f"the truth lacks {', '.join(missing)}: copy TRUTH_PARAMETERS")

    def column(name: str) -> np.ndarray:
        if name not in truth.columns:
            return np.full(row_shape, np.nan)
        return truth[name].to_numpy(dtype=float).reshape(row_shape)

    sensitivity, base, reference, amplitude, peak, share, kink_price = (
        column(name) for name in (
            needed[0], "base_daily_units", "reference_price", "seasonal_amplitude",
            "seasonal_peak_day", "reference_share", "kink_price"))
    code = code.reshape(row_shape)
    relative = price / reference
    full = np.broadcast_shapes(relative.shape, day.shape, row_shape)
    s, share_full, kink_full, code_full, x = (
        np.broadcast_to(a, full)
        for a in (sensitivity, share, kink_price / reference, code, relative))
    season = 1.0 + amplitude * np.cos(2.0 * np.pi * (day - peak) / DAYS_PER_YEAR)
    return base * _shape(code_full, s, share_full, kink_full, x) * season


def _lambert_w(y: np.ndarray) -> np.ndarray:
    """The principal branch of Lambert's W (w * exp(w) = y) for y >= 0, by Halley steps."""
    w = np.log1p(y)
    for _ in range(50):
        ew = np.exp(w)
        f = w * ew - y
        step = f / (ew * (w + 1.0) - (w + 2.0) * f / (2.0 * w + 2.0))
        w = w - step
        if np.all(np.abs(step) <= 1e-13 * np.maximum(1.0, np.abs(w))):
            break
    return w


def _elasticity(code, s, share, kink_price, reference) -> np.ndarray:
    """The point elasticity |d ln q / d ln p| at the reference price (kinked: on its side of
    the kink, the side above at the kink itself)."""
    kinked_above = (code == _KINKED) & ~(kink_price > reference)
    return np.where(code == _LOGIT, s * (1.0 - np.nan_to_num(share)),
                    np.where(kinked_above, KINK_SENSITIVITY_RATIO * s, s))


def _optimal_price(code, s, share, kink_price, reference, cost) -> np.ndarray:
    """The profit-maximising price, `cost` being (unit_cost + fee_fixed) / (1 - fee rate)."""
    optimum = np.full(len(code), np.nan)
    rows = code == _KINKED
    below = cost[rows] + reference[rows] / s[rows]
    above = cost[rows] + reference[rows] / (KINK_SENSITIVITY_RATIO * s[rows])
    optimum[rows] = np.clip(kink_price[rows], above, below)
    rows = code == _EXPONENTIAL
    optimum[rows] = cost[rows] + reference[rows] / s[rows]
    rows = code == _ISOELASTIC
    optimum[rows] = cost[rows] * s[rows] / (s[rows] - 1.0)
    rows = code == _LINEAR
    optimum[rows] = 0.5 * (cost[rows] + reference[rows] * (1.0 + s[rows]) / s[rows])
    rows = code == _LOGIT
    beta = s[rows] / reference[rows]
    utility = _logit_intercept(s[rows], share[rows]) - beta * cost[rows]
    optimum[rows] = cost[rows] + (1.0 + _lambert_w(np.exp(utility - 1.0))) / beta
    return optimum


def _charm_price(price: np.ndarray) -> np.ndarray:
    """The nearest price ending in .49 or .99 (at least 0.49)."""
    return np.round(np.maximum(np.round(2.0 * (price + 0.01)) / 2.0 - 0.01, 0.49), 2)


def _charm_price_within(price: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """`_charm_price(price)`, moved to the nearest .49/.99 price within [low, high]."""
    lowest = np.round(np.ceil(2.0 * (low + 0.01) - 1e-9) / 2.0 - 0.01, 2)
    highest = np.round(np.floor(2.0 * (high + 0.01) + 1e-9) / 2.0 - 0.01, 2)
    return np.minimum(np.maximum(_charm_price(price), lowest), highest)


def _moved_price(target: np.ndarray, previous: np.ndarray, low: np.ndarray,
                 high: np.ndarray) -> np.ndarray:
    """The .49/.99 price within [low, high] nearest `target` that differs from `previous`: a
    change the rounding would swallow moves one step (0.50) towards `target`, or the other
    way where a bound blocks it."""
    price = _charm_price_within(target, low, high)
    can_rise = previous + CHARM_STEP <= high + 1e-9
    can_fall = previous - CHARM_STEP >= low - 1e-9
    up = np.where(target > previous, can_rise, ~can_fall)
    bumped = np.round(previous + np.where(up, CHARM_STEP, -CHARM_STEP), 2)
    return np.where(np.abs(price - previous) < 0.005, bumped, price)


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
        "stock_on_hand": np.nan,  # stock is not simulated: every item sells what it is asked
        "restock_days": np.nan,
    })
    return catalog, category, designer, printed, reference_price


def _isoelastic_sensitivity(rank, shift, item, cost, reference, min_price, max_price):
    """Isoelastic s per row: calibrated on the web row so that the web optimum
    cost * s / (s - 1) falls at a drawn fraction of the reference price (lower for more
    sensitive items), its excess s - 1 scaled by (1 + channel shift) on the other channels,
    then kept where the optimum lies within [min_price, max_price] and s <= 3.5."""
    low, high = ISOELASTIC_OPTIMUM_RANGE
    web = slice(_WEB, None, len(CHANNEL_SPECS))
    web_cost = cost[web]
    target = (high - rank * (high - low)) * reference[web]
    excess = web_cost / (target - web_cost)
    s = 1.0 + excess[item] * (1.0 + shift)
    lowest_optimum, highest_optimum = min_price + 0.01, max_price - 0.01
    s_low = highest_optimum / (highest_optimum - cost)
    s_high = np.minimum(lowest_optimum / (lowest_optimum - cost), MAX_ISOELASTIC_SENSITIVITY)
    return np.clip(s, s_low, s_high)


def _draw_truth(rng, catalog, category, designer, printed, reference_price, start: date,
                family: str):
    """The hidden demand parameters, one row per item x channel (item-major order)."""
    items, n_channels = len(catalog), len(CHANNEL_SPECS)
    median_units, spread = WEB_UNITS_AT_OPTIMUM
    units_at_optimum = rng.lognormal(np.log(median_units), spread, items) * np.where(
        printed, PRINTED_UNITS_FACTOR, 1.0)
    rank = rng.random(items)  # the item's price sensitivity within its family's range
    second_rank = rng.random(items)  # the logit share's, or the kinked family's kink's
    amplitude = rng.uniform(0.05, 0.35, items)
    mispricing = np.exp(rng.uniform(*np.log(MISPRICING_RANGE), items))
    start_day_of_year = start.timetuple().tm_yday - 1
    peak_of_year = np.array(CATEGORY_PEAK_DAY)[category] + np.round(rng.normal(0, 15, items))
    peak_day = np.mod(peak_of_year - start_day_of_year, DAYS_PER_YEAR).astype(int)

    item = np.repeat(np.arange(items), n_channels)
    chan = np.tile(np.arange(n_channels), items)
    spec = _channel_table().iloc[chan].reset_index(drop=True)
    shift = spec["sensitivity_shift"].to_numpy()
    unit_cost = catalog["unit_cost"].to_numpy()[item]
    fee_rate = spec["fee_percent"].to_numpy() / 100.0
    fee_fixed = spec["fee_fixed"].to_numpy()
    cost = (unit_cost + fee_fixed) / (1.0 - fee_rate)
    min_price = catalog["min_price"].to_numpy()[item]
    max_price = catalog["max_price"].to_numpy()[item]
    reference = reference_price[item]
    code = np.full(len(item), DEMAND_FAMILIES.index(family))
    if family == "isoelastic":
        s = _isoelastic_sensitivity(rank, shift, item, cost, reference, min_price, max_price)
    else:
        low, high = SENSITIVITY_RANGES[family]
        s = low + rank[item] * (high - low) + shift
    web = slice(_WEB, None, n_channels)
    share_low, share_high = REFERENCE_SHARE_RANGE
    row_share = np.full(len(item), np.nan)
    if family == "logit":
        row_share = (share_low + second_rank * (share_high - share_low))[item]
    kink_price = np.full(len(item), np.nan)
    if family == "kinked":
        kink_low, kink_high = KINK_RANGE
        web_below_optimum = cost[web] + reference[web] / s[web]
        kink_price = np.round(web_below_optimum
                              * (kink_low + second_rank * (kink_high - kink_low)), 2)[item]
    optimal = _optimal_price(code, s, row_share, kink_price, reference, cost)
    web_optimum = optimal[web][item]
    # Demand at the reference price is sized by the web demand at the web optimum.
    base_units = units_at_optimum / _shape(code[web], s[web], row_share[web],
                                           kink_price[web] / reference[web],
                                           optimal[web] / reference[web])
    base_price = _charm_price_within(
        web_optimum * mispricing[item] * spec["price_markup"].to_numpy(), min_price, max_price)
    return pd.DataFrame({
        "item_id": catalog["item_id"].to_numpy()[item],
        "channel": spec["channel"].to_numpy(dtype=object),
        "category": catalog["category"].to_numpy()[item],
        "designer": np.array(DESIGNERS, dtype=object)[designer[item]],
        "format": np.array(FORMATS, dtype=object)[printed[item].astype(int)],
        "family": np.full(len(item), family, dtype=object),
        "base_daily_units": base_units[item] * spec["demand_multiplier"].to_numpy(),
        "price_sensitivity": s,
        "reference_share": row_share,
        "kink_price": kink_price,
        "reference_price": reference,
        "seasonal_amplitude": amplitude[item],
        "seasonal_peak_day": peak_day[item],
        "elasticity": _elasticity(code, s, row_share, kink_price, reference),
        "unit_cost": unit_cost,
        "fee_percent": spec["fee_percent"].to_numpy(),
        "fee_fixed": fee_fixed,
        "base_price": base_price,
        "optimal_price": np.round(optimal, 2),
    })


def _draw_prices(rng: np.random.Generator, base: np.ndarray, low: np.ndarray,
                 high: np.ndarray, items: int, days: int) -> np.ndarray:
    """Price of each row (item-major) on each day: flat list prices that end at `base`, with
    permanent list-price changes and temporary episodes; STATIC_SHARE of the items keep
    their list prices throughout."""
    n_channels = len(CHANNEL_SPECS)
    rows = items * n_channels
    row_item = np.repeat(np.arange(items), n_channels)
    repriced = np.ones(items, dtype=bool)
    repriced[rng.permutation(items)[:round(STATIC_SHARE * items)]] = False
    years = days / DAYS_PER_YEAR
    item_changes = rng.poisson(ITEM_LIST_CHANGES_PER_YEAR * years, items) * repriced
    row_changes = rng.poisson(CHANNEL_LIST_CHANGES_PER_YEAR * years, rows) * repriced[row_item]
    episodes = rng.poisson(EPISODES_PER_YEAR * years, items) * repriced
    unchanged = repriced & (item_changes + episodes
                            + np.bincount(row_item, row_changes, items) == 0)
    item_changes[unchanged] = 1  # every repriced item changes price at least once
    if days < 2:
        return np.repeat(base[:, None], days, axis=1)

    # Permanent list-price changes, effective from their day: one row per channel of an
    # item-wide change, then the per-channel ones.
    n_item = int(item_changes.sum())
    changed_item = np.repeat(np.arange(items), item_changes)
    item_day = rng.integers(1, days, n_item)
    item_factor = np.array(LIST_CHANGE_FACTORS)[rng.integers(0, len(LIST_CHANGE_FACTORS), n_item)]
    n_row = int(row_changes.sum())
    row_factor = np.array(LIST_CHANGE_FACTORS)[rng.integers(0, len(LIST_CHANGE_FACTORS), n_row)]
    change_row = np.concatenate([
        (changed_item[:, None] * n_channels + np.arange(n_channels)).ravel(),
        np.repeat(np.arange(rows), row_changes)])
    change_day = np.concatenate([np.repeat(item_day, n_channels), rng.integers(1, days, n_row)])
    change_factor = np.concatenate([np.repeat(item_factor, n_channels), row_factor])

    # The list price path, backwards from the current list price `base`: before a change of
    # factor f the list price was the later one divided by f.
    list_price = np.repeat(base[:, None], days, axis=1)
    after = base.copy()
    for r, d, f in zip(*(a[np.lexsort((-change_day, change_row))].tolist()
                         for a in (change_row, change_day, change_factor)), strict=True):
        before = float(_moved_price(np.array(after[r] / f), np.array(after[r]), low[r], high[r]))
        list_price[r, :d] = before
        after[r] = before

    # Temporary tests and promotions: the list price at their start times a factor, for 7 to
    # 28 days, over before the last day; on every channel of the item or on one.
    n_episodes = int(episodes.sum())
    episode_item = np.repeat(np.arange(items), episodes)
    length = rng.integers(EPISODE_DAYS[0], EPISODE_DAYS[1] + 1, n_episodes)
    room = days - 1 - length
    first = np.floor(rng.random(n_episodes) * (np.maximum(room, 0) + 1)).astype(np.int64)
    factor = np.array(PRICE_FACTORS)[rng.integers(0, len(PRICE_FACTORS), n_episodes)]
    item_wide = rng.random(n_episodes) < EPISODE_ITEM_WIDE_SHARE
    one_channel = rng.integers(0, n_channels, n_episodes)
    prices = list_price.copy()
    for i, a, n, f, wide, c in zip(episode_item.tolist(), first.tolist(), length.tolist(),
                                   factor.tolist(), item_wide.tolist(), one_channel.tolist(),
                                   strict=True):
        if a + n > days - 1:
            continue  # the history is too short for it
        targets = i * n_channels + (np.arange(n_channels) if wide else np.array([c]))
        listed = list_price[targets, a]
        prices[targets, a:a + n] = _moved_price(
            listed * f, listed, low[targets], high[targets])[:, None]
    return prices


def _simulate_demand(rng: np.random.Generator, days: int, items: int, start: date,
                     family: str) -> _Demand:
    catalog, category, designer, printed, reference_price = _draw_catalog(rng, items)
    truth = _draw_truth(rng, catalog, category, designer, printed, reference_price, start,
                        family)
    low, high = (np.repeat(catalog[c].to_numpy(), len(CHANNEL_SPECS))
                 for c in ("min_price", "max_price"))
    prices = _draw_prices(rng, truth["base_price"].to_numpy(), low, high, items, days)
    day = np.arange(days)[None, :]
    expected = expected_daily_units(truth, prices, day)
    units = rng.poisson(expected)
    browse_weight = expected_daily_units(truth, truth["reference_price"].to_numpy()[:, None], day)
    catalog["current_price"] = prices[_WEB::len(CHANNEL_SPECS), -1]
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
                  start: date, tag: str = "") -> pd.DataFrame:
    """Sessions (purchasing and abandoned), their events, and returns, as canonical events;
    `tag` goes into every event and session id (after `sim-{seed}-` and `S`)."""
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
    session_ids = _numbered(f"S{tag}", session_rank + 1, 6)

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
        "event_id": _numbered(f"sim-{seed}-{tag}", np.arange(1, count + 1), 7),
        "event_type": np.array(EVENT_TYPES, dtype=object)[kind],
        "user_id": user_ids[ev_user],
        "session_id": session_ids[ev_session],
        "item_id": demand.catalog["item_id"].to_numpy()[ev_item],
        "ts": pd.Series(ts).dt.tz_localize("UTC"),
        "quantity": np.ones(count, dtype=np.int32),
        "unit_price": ev_price.astype(float),
        "currency": np.full(count, CURRENCY, dtype=object),
        "channel": np.array([c.channel for c in CHANNEL_SPECS], dtype=object)[ev_channel],
        "request_id": np.full(count, None, dtype=object),  # shoppers not following recs
        "stock_on_hand": np.full(count, np.nan),  # no stock reports (as canonical: float)
    })


def _market(demand: _Demand, events: pd.DataFrame, start: date) -> SimulatedMarket:
    rows, days = demand.prices.shape
    item_ids, channel_names = (demand.truth[c].to_numpy() for c in ("item_id", "channel"))
    prices = pd.DataFrame({
        "item_id": np.repeat(item_ids, days),
        "channel": np.repeat(channel_names, days),
        "day": np.tile(np.arange(days), rows),
        "price": demand.prices.ravel(),
    })
    channel_prices = pd.DataFrame({
        "item_id": item_ids, "channel": channel_names, "current_price": demand.prices[:, -1]})
    channels = _channel_table()[PUBLIC_CHANNEL_COLUMNS]
    return SimulatedMarket(events, demand.catalog, channels, demand.truth, start, prices,
                           channel_prices)


def _check_counts(seed: int, **counts: int) -> None:
    for name, value in counts.items():
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")


def _check_arguments(days: int, users: int, items: int, seed: int, family: str) -> None:
    _check_counts(seed, days=days, users=users, items=items)
    _check_family(family)


def _simulate(days: int, users: int, items: int, seed: int, start: date, family: str,
              done: Callable[[], None] = lambda: None) -> SimulatedMarket:
    demand_rng, session_rng = np.random.default_rng(seed).spawn(2)
    demand = _simulate_demand(demand_rng, days, items, start, family)
    done()
    events = _build_events(session_rng, demand, users, seed, start)
    done()
    return _market(demand, events, start)


def simulate_market(days: int, users: int, items: int, seed: int,
                    start: date = date(2025, 1, 1), *,
                    family: DemandFamily | str = "exponential") -> SimulatedMarket:
    """Simulate `days` days of a shop of `items` items and `users` users from `start`, its
    demand of the given family (one of DEMAND_FAMILIES)."""
    _check_arguments(days, users, items, seed, family)
    return _simulate(days, users, items, seed, start, family)


PRICE_PLAN_COLUMNS: tuple[str, ...] = ("item_id", "channel", "day", "price")


def _planned_prices(rows: pd.MultiIndex, last: np.ndarray, days: int,
                    plan: pd.DataFrame | None) -> np.ndarray:
    """The price of each row (item_id, channel) on each of `days` days: its `last` price,
    or the one `plan` sets (checked; errors name the column)."""
    prices = np.repeat(last[:, None], days, axis=1)
    if plan is None:
        return prices
    missing = [name for name in PRICE_PLAN_COLUMNS if name not in plan.columns]
    if missing:
        raise ValueError(f"price_plan lacks column(s) {', '.join(missing)}")
    row = rows.get_indexer(pd.MultiIndex.from_arrays([plan["item_id"], plan["channel"]]))
    if (row < 0).any():
        bad = plan[row < 0].iloc[0]
        raise ValueError(f"price_plan columns 'item_id', 'channel': {bad['item_id']} on "
                         f"{bad['channel']} is not an item x channel of the market")
    day = pd.to_numeric(plan["day"], errors="coerce").to_numpy(dtype=float)
    if not (np.isfinite(day) & (day == np.floor(day)) & (day >= 0) & (day < days)).all():
        raise ValueError(f"price_plan column 'day' must hold whole days in [0, {days})")
    price = pd.to_numeric(plan["price"], errors="coerce").to_numpy(dtype=float)
    if not (np.isfinite(price) & (price > 0)).all():
        raise ValueError("price_plan column 'price' must be finite and > 0")
    repeated = pd.DataFrame({"row": row, "day": day}).duplicated().to_numpy()
    if repeated.any():
        bad = plan[repeated].iloc[0]
        raise ValueError(f"price_plan columns 'item_id', 'channel', 'day' repeat {bad['item_id']} "
                         f"on {bad['channel']} day {bad['day']}")
    prices[row, day.astype(np.int64)] = price
    return prices


def continue_market(market: SimulatedMarket, days: int, seed: int, users: int,
                    price_plan: pd.DataFrame | None = None) -> SimulatedMarket:
    """The market `days` days further on, from the day after its last day.

    Every item x channel keeps its last price, except where `price_plan` (PRICE_PLAN_COLUMNS;
    `day` counts from 0 within the continuation) sets another. Units are Poisson draws of the
    true demand on those days, each item x channel x day from its own uniform, so two
    continuations from one seed sell the same units wherever their prices agree. The new
    events (from `seed`, with `users` users, ids tagged with the continuation's first day)
    follow the old ones, and `prices`, `channel_prices` and the catalog's `current_price` take
    in the new days.
    """
    _check_counts(seed, days=days, users=users)
    truth, n_channels = market.truth, len(CHANNEL_SPECS)
    rows = pd.MultiIndex.from_frame(truth[["item_id", "channel"]])
    history = market.prices.pivot(index=["item_id", "channel"], columns="day", values="price")
    history = history.loc[rows].to_numpy()
    old_days = history.shape[1]
    prices = _planned_prices(rows, history[:, -1], days, price_plan)

    demand_rng, session_rng = np.random.default_rng(seed).spawn(2)
    day = old_days + np.arange(days)[None, :]
    # Each cell's units from its own uniform (common random numbers): two continuations of a
    # market from one seed sell the same units wherever their prices agree.
    uniform = demand_rng.random(prices.shape)
    units = np.maximum(poisson.ppf(uniform, expected_daily_units(truth, prices, day)), 0)
    units = units.astype(np.int64)
    browse_weight = expected_daily_units(truth, truth["reference_price"].to_numpy()[:, None], day)
    catalog = market.catalog.assign(current_price=prices[_WEB::n_channels, -1])
    category = np.array([CATEGORIES.index(name) for name in catalog["category"]])
    printed = truth["format"].to_numpy()[_WEB::n_channels] == "printed"
    demand = _Demand(catalog, truth, category, printed, prices, units, browse_weight)
    events = _build_events(session_rng, demand, users, seed,
                           market.start + timedelta(days=old_days), tag=f"d{old_days}-")
    events = pd.concat([market.events, events], ignore_index=True)
    return _market(replace(demand, prices=np.hstack([history, prices])), events, market.start)


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
    _write_csv_atomic(market.channel_prices, out_dir / CHANNEL_PRICES_FILE)
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

    Writes `events/` (the event log), `catalog.csv`, `channels.csv` (public fees),
    `channel_prices.csv` (every item x channel's price on the last day) and
    `ground_truth.parquet` (the truth table with the simulation `start`), each atomically.
    """
    market = replace(market, events=validate_events(market.events),
                     catalog=validate_catalog(market.catalog))
    return _write_validated(market, out_dir)


def simulate_to_dir(days: int, users: int, items: int, seed: int, out_dir: Path,
                    start: date = date(2025, 1, 1), *,
                    family: DemandFamily | str = "exponential") -> dict[str, int]:
    """Simulate a market and write it to `out_dir` with a progress display; return counts."""
    _check_arguments(days, users, items, seed, family)
    names = ["simulating demand", "building sessions", "validating", "writing"]
    with stages(names) as done:
        market = _simulate(days, users, items, seed, start, family, done)
        market = replace(market, events=validate_events(market.events),
                         catalog=validate_catalog(market.catalog))
        done()
        counts = _write_validated(market, out_dir)
        done()
    return counts
