"""Profit-maximising price suggestions per item x channel that never break the guardrails.

An offer is one item on one channel (a row of `offers`, columns `OFFER_COLUMNS`). A demand
model `expected_units(rows, prices)` gives the expected units of each row at its price, and

    profit(p) = (p * (1 - fee_percent / 100) - fee_fixed - unit_cost) * expected_units(p)

with a unit cost of 0 when it is unknown; revenue is `p * expected_units(p)`.

Decision under uncertainty. A demand model that knows the uncertainty of its price response
passes `DemandCurves` with `scenarios`: the expected units at the two ends of each offer's
confidence interval of the response, both equal to the expected units at the current price.
A price other than the current one is then eligible only when its expected profit gain over
the current price is positive in every scenario (and expected): the lower bound of the gain
is positive at that confidence, and above `Guardrails.min_gain_percent` of the current
profit; with `evidence` too, the offer also needs
`Guardrails.min_evidence_share` of its response from its own sales. Otherwise the price is
kept, with the best rejected move and its gain interval in the explanation. An offer whose
current price breaks a rule must move, and takes its most profitable allowed price whatever
the confidence.

Candidates. The allowed grid is every `k + e` for whole `k` and an allowed ending `e` (or every
multiple of `price_step` when `price_endings` is empty). An offer's candidates are the positive
grid prices that satisfy every rule: at or above the min margin floor (`Guardrails.margin_floor`)
and the catalog `min_price`, at or below the catalog `max_price`, within `max_change_percent` of
the current price and within the trust band around the observed prices and the current price.
The current price is a candidate only when it satisfies every rule, its ending included. Each
offer takes its most profitable candidate; ties go to the price nearest the current one, then
to the lower price.

Stock. Offers may carry `STOCK_COLUMNS`: an item's stock on hand serves all its channels and,
at current prices, lasts its days of cover. An item whose stock sells out before its restock
horizon (`restock_days`, else `Guardrails.restock_days`) is scarce: none of its prices goes down
(the "stock" rule) and each channel's expected units are capped at its share of the stock over
the horizon, so a price rise that only loses units the stock could not serve costs nothing.
An item with more than `Guardrails.overstock_days` of cover is overstocked: its units are
costed at `Guardrails.overstock_cost_share` of the unit cost, which favours prices that clear
it (the min margin floor keeps the full cost). Items without stock are priced as before.

Channel spread. When an item's per-channel choices spread more than `max_channel_spread_percent`,
its channels are chosen jointly to maximise the item's total expected profit: every candidate
price is tried as the item's lowest price L, each channel takes its best candidate in
[L, L * (1 + spread)], and the best total wins (exact, as every feasible choice has such an L).

`bound_by` names the rules that changed a decision. The unconstrained best is the most profitable
eligible price on the wide grid: the allowed grid from 0.2x to 4x the current price (widened to
cover every candidate) plus the current price itself. Each rule that price breaks is listed
("price_endings" when it is the current price with a disallowed ending), and "channel_spread"
when the item's joint choice moved the channel away from its own best candidate.

Offers that no price can satisfy are returned in `skipped` with a reason naming the conflict:
offers with no observed prices (the trust band has no anchor), rules whose bounds cross, no
grid price between the bounds, or an item whose channels cannot meet the spread.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models.pricing.guardrails import Guardrails

ExpectedUnits = Callable[[pd.DataFrame, np.ndarray], np.ndarray]
EVIDENCE_COLUMNS = ("elasticity", "elasticity_low", "elasticity_high", "evidence_share",
                    "price_levels")


@dataclass(frozen=True)
class DemandCurves:
    """What the optimizer knows of demand: `expected_units(rows, prices)`; optionally
    `scenarios`, the expected units at the ends of each offer's confidence interval of the
    price response (equal to `expected_units` at the current price), and `evidence`, one row
    per offer in the offers' order with `EVIDENCE_COLUMNS` (price_levels: distinct prices
    observed)."""

    expected_units: ExpectedUnits
    scenarios: tuple[ExpectedUnits, ...] = ()
    evidence: pd.DataFrame | None = field(default=None)

RULES = (
    "min_margin", "min_price", "max_price", "max_change", "trust_band", "stock",
    "channel_spread", "price_endings",
)
PRICE_RULES = tuple(rule for rule in RULES if rule != "channel_spread")  # checked price by price
OFFER_COLUMNS = (
    "item_id", "channel", "unit_cost", "fee_percent", "fee_fixed", "current_price", "min_price",
    "max_price", "observed_min_price", "observed_max_price",
)
NUMERIC_OFFER_COLUMNS = OFFER_COLUMNS[2:]
# Optional offer columns of stock-aware pricing: the item's stock on hand (units, missing when
# not tracked), its own restock horizon in days (missing: Guardrails.restock_days) and the
# length in days of the period the expected units are for.
STOCK_COLUMNS = ("stock_on_hand", "restock_days", "period_days")
SUGGESTION_COLUMNS = (
    "item_id", "channel", "current_price", "suggested_price", "expected_units_current",
    "expected_units_suggested", "expected_revenue_current", "expected_revenue_suggested",
    "expected_profit_current", "expected_profit_suggested", "expected_profit_gain_low",
    "expected_profit_gain_high", "elasticity", "elasticity_low", "elasticity_high",
    "evidence_share", "bound_by", "model_version", "explanation", "price_floor",
    "price_floor_rule", "price_ceiling", "price_ceiling_rule",
)
SKIPPED_COLUMNS = ("item_id", "channel", "reason")
WIDE_GRID_FACTORS = (0.2, 4.0)  # the unconstrained grid spans these multiples of current price
NAIVE_GRID_FACTORS = tuple(float(f) for f in np.round(np.arange(0.2, 4.0 + 1e-9, 0.01), 2))
TOLERANCE = 1e-9  # absolute slack on price comparisons (float rounding only)
EVALUATION_CHUNK_ROWS = 500_000  # the demand model sees at most this many prices per call
NO_OBSERVATIONS_REASON = "no observed prices for this item and channel to anchor the trust band"

# Rule -> (bounds column, wording) of the lower and upper bound each rule puts on a price.
_LOWER_BOUNDS = {
    "min_margin": ("margin_floor", "the min margin floor"),
    "min_price": ("min_price", "the catalog min price"),
    "max_change": ("change_low", "the max change's bottom"),
    "trust_band": ("trust_low", "the trust band's bottom"),
    "stock": ("stock_low", "the current price (stock sells out before restock)"),
}
_UPPER_BOUNDS = {
    "max_price": ("max_price", "the catalog max price"),
    "max_change": ("change_high", "the max change's top"),
    "trust_band": ("trust_high", "the trust band's top"),
}


@dataclass(frozen=True)
class OptimizationResult:
    """One row per offer in exactly one of `suggestions` (`SUGGESTION_COLUMNS`) and `skipped`
    (`SKIPPED_COLUMNS`), in the order of the offers."""

    suggestions: pd.DataFrame
    skipped: pd.DataFrame


def _checked_offers(offers: pd.DataFrame) -> pd.DataFrame:
    """`offers` with a fresh index and float price columns; raises ValueError on bad values."""
    missing = [column for column in OFFER_COLUMNS if column not in offers.columns]
    if missing:
        raise ValueError(f"offers lack the column(s): {', '.join(missing)}")
    checked = offers.reset_index(drop=True).astype(dict.fromkeys(NUMERIC_OFFER_COLUMNS, float))
    if checked.duplicated(["item_id", "channel"]).any():
        raise ValueError("offers repeat an item_id x channel pair")

    def finite_at_least(column: str, low: float) -> pd.Series:
        return np.isfinite(checked[column]) & (checked[column] >= low)

    observed_min, observed_max = checked["observed_min_price"], checked["observed_max_price"]
    problems = {
        "current_price must be finite and > 0":
            ~finite_at_least("current_price", 0) | (checked["current_price"] == 0),
        "fee_percent must be in [0, 100)":
            ~finite_at_least("fee_percent", 0) | (checked["fee_percent"] >= 100),
        "fee_fixed must be finite and >= 0": ~finite_at_least("fee_fixed", 0),
        "min_price must be finite and >= 0": ~finite_at_least("min_price", 0),
        "unit_cost must be missing or finite and >= 0":
            checked["unit_cost"].notna() & ~finite_at_least("unit_cost", 0),
        "max_price must be missing or finite and >= 0":
            checked["max_price"].notna() & ~finite_at_least("max_price", 0),
        "observed_min_price and observed_max_price must be both missing or 0 <= min <= max":
            (observed_min.isna() != observed_max.isna())
            | (observed_min.notna() & ~finite_at_least("observed_min_price", 0))
            | (observed_max.notna() & ~np.isfinite(observed_max))
            | (observed_min > observed_max),
    }
    if "stock_on_hand" in checked.columns:
        checked = checked.astype(dict.fromkeys(
            [column for column in STOCK_COLUMNS if column in checked.columns], float))
        tracked = checked["stock_on_hand"].notna()
        restock, period = _column(checked, "restock_days"), _column(checked, "period_days")
        problems |= {
            "stock_on_hand must be missing or finite and >= 0":
                tracked & ~finite_at_least("stock_on_hand", 0),
            "restock_days must be missing or finite and > 0":
                restock.notna() & ~(np.isfinite(restock) & (restock > 0)),
            "period_days must be finite and > 0 where stock is tracked":
                tracked & ~(np.isfinite(period) & (period > 0)),
        }
    broken = [f"{rule} ({mask.sum()} row(s))" for rule, mask in problems.items() if mask.any()]
    if broken:
        raise ValueError("invalid offers: " + "; ".join(broken))
    return checked


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A float column of `frame`, all missing when absent."""
    if name in frame.columns:
        return frame[name].astype(float)
    return pd.Series(np.nan, index=frame.index)


@dataclass(frozen=True)
class _Stock:
    """Per offer: the units a period can sell (inf when stock is not tracked), the unit cost
    the profit counts, and whether the item is scarce or overstocked, with its days of cover
    at current prices."""

    cap: np.ndarray
    unit_cost: np.ndarray
    scarce: np.ndarray
    overstocked: np.ndarray
    days_of_cover: np.ndarray


def _stock(offers: pd.DataFrame, demand: DemandCurves, guardrails: Guardrails) -> _Stock:
    """Stock-aware pricing. An item's stock serves all its channels; at current prices it
    lasts `days_of_cover` = stock / (the item's expected units per day). Shorter than its
    restock horizon: scarce (no price goes down; each channel sells at most its share of the
    stock over the horizon, shares in proportion to expected units at current prices). Longer
    than `Guardrails.overstock_days`: overstocked (units cost `overstock_cost_share` of their
    unit cost)."""
    unit_cost = offers["unit_cost"].fillna(0).to_numpy(dtype=float)
    stock = _column(offers, "stock_on_hand").to_numpy()
    tracked = ~np.isnan(stock)
    period = _column(offers, "period_days").to_numpy()
    per_day = np.zeros(len(offers))
    rows = np.flatnonzero(tracked)
    if rows.size:
        current = offers["current_price"].to_numpy(dtype=float)[rows]
        per_day[rows] = (_predicted_units(offers, rows, current, demand.expected_units)
                         / period[rows])
    item_per_day = pd.Series(per_day).groupby(offers["item_id"].to_numpy()).transform("sum")
    item_per_day = item_per_day.to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        cover = np.where(tracked, stock / item_per_day, np.nan)
        share = np.where(item_per_day > 0, per_day / item_per_day, 0.0)
    horizon = _column(offers, "restock_days").fillna(guardrails.restock_days).to_numpy()
    scarce = tracked & (cover < horizon)
    overstocked = tracked & ~scarce & (cover > guardrails.overstock_days)
    cap = np.where(scarce, stock * share * period / horizon, np.inf)
    cost = np.where(overstocked, unit_cost * guardrails.overstock_cost_share, unit_cost)
    return _Stock(cap, cost, scarce, overstocked, cover)


def _rule_bounds(offers: pd.DataFrame, guardrails: Guardrails,
                 scarce: np.ndarray) -> pd.DataFrame:
    """Per offer, the bound each rule puts on the price and the tightest lower and upper bound
    with the rule that sets it (trust band bounds are NaN without observations)."""
    current = offers["current_price"].to_numpy()
    change = guardrails.max_change_percent / 100
    trust = guardrails.trust_band_percent / 100
    bounds = pd.DataFrame({
        "margin_floor": guardrails.margin_floor(
            offers["unit_cost"], offers["fee_percent"], offers["fee_fixed"]
        ),
        "min_price": offers["min_price"].to_numpy(),
        "max_price": offers["max_price"].fillna(np.inf).to_numpy(),
        "change_low": current * (1 - change),
        "change_high": current * (1 + change),
        "trust_low": np.minimum(offers["observed_min_price"].to_numpy(), current) * (1 - trust),
        "trust_high": np.maximum(offers["observed_max_price"].to_numpy(), current) * (1 + trust),
        "stock_low": np.where(scarce, current, -np.inf),
    })
    for side, rules, empty, pick in (("lower", _LOWER_BOUNDS, -np.inf, np.argmax),
                                     ("upper", _UPPER_BOUNDS, np.inf, np.argmin)):
        values = bounds[[column for column, _ in rules.values()]].fillna(empty).to_numpy()
        tightest = pick(values, axis=1)
        bounds[side] = values[np.arange(len(values)), tightest]
        bounds[f"{side}_rule"] = np.array(list(rules))[tightest]
    return bounds


def _grid_cents(guardrails: Guardrails) -> tuple[int, np.ndarray]:
    """The allowed grid as (period, offsets) in cents: prices are k * period + offset."""
    if guardrails.price_endings:
        return 100, np.array([round(ending * 100) for ending in guardrails.price_endings])
    return round(guardrails.price_step * 100), np.array([0])


@dataclass(frozen=True)
class _Points:
    """Prices evaluated by the demand model, one array entry per point, grouped by offer row."""

    row: np.ndarray
    price: np.ndarray
    is_current: np.ndarray  # the offer's current price (exactly one point per row)
    ending_allowed: np.ndarray  # False only for a current price off the allowed endings
    units: np.ndarray
    profit: np.ndarray
    distance: np.ndarray  # |price - current price|
    gain_low: np.ndarray  # the lowest and highest profit gain over the current price among
    gain_high: np.ndarray  # the expected units and the scenarios


def _grid_cents_between(low: np.ndarray, high: np.ndarray,
                        guardrails: Guardrails) -> tuple[np.ndarray, np.ndarray]:
    """The positive allowed grid prices in [low[i], high[i]] of every i, in cents, ascending
    within each i: arrays of i and cents."""
    period, offsets = _grid_cents(guardrails)
    low_cents = np.maximum(np.ceil(low * 100 - 1e-6), 1).astype(np.int64)
    high_cents = np.floor(high * 100 + 1e-6).astype(np.int64)
    first_block = low_cents // period
    blocks_per_row = np.maximum(high_cents // period - first_block + 1, 0)
    block_row = np.repeat(np.arange(len(low)), blocks_per_row)
    block = first_block[block_row] + np.arange(len(block_row)) - np.repeat(
        np.cumsum(blocks_per_row) - blocks_per_row, blocks_per_row
    )
    cents = (block[:, None] * period + offsets).ravel()
    position = np.repeat(block_row, len(offsets))
    inside = (cents >= low_cents[position]) & (cents <= high_cents[position])
    return position[inside], cents[inside]


def grid_prices_between(low: np.ndarray, high: np.ndarray,
                        guardrails: Guardrails) -> tuple[np.ndarray, np.ndarray]:
    """The positive prices of the allowed grid (`Guardrails.price_endings`, else multiples of
    `price_step`) in [low[i], high[i]] of every i, ascending within each i: arrays of i and
    price."""
    position, cents = _grid_cents_between(np.asarray(low, dtype=float),
                                          np.asarray(high, dtype=float), guardrails)
    return position, cents / 100


def _grid_prices(
    offers: pd.DataFrame, rows: np.ndarray, low: np.ndarray, high: np.ndarray,
    guardrails: Guardrails,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each row's positive grid prices in [low, high] plus its current price, grouped by row:
    arrays of row, price, is_current and ending_allowed."""
    position, cents = _grid_cents_between(low, high, guardrails)
    current = offers["current_price"].to_numpy()[rows]
    current_cents = np.round(current * 100)
    on_a_cent = np.abs(current * 100 - current_cents) < 1e-6
    keep = ~(on_a_cent[position] & (cents == current_cents[position]))
    grid_points = int(keep.sum())
    point_rows = np.concatenate([rows[position[keep]], rows])
    order = np.argsort(point_rows, kind="stable")
    prices = np.concatenate([cents[keep] / 100, current])
    is_current = np.concatenate([np.zeros(grid_points, bool), np.ones(len(rows), bool)])
    ending_allowed = np.concatenate(
        [np.ones(grid_points, bool), guardrails.on_grid(current, current)]
    )
    return point_rows[order], prices[order], is_current[order], ending_allowed[order]


def _predicted_units(
    offers: pd.DataFrame, rows: np.ndarray, prices: np.ndarray, expected_units: ExpectedUnits,
) -> np.ndarray:
    """The demand model's units of each row at its price, at most `EVALUATION_CHUNK_ROWS` per
    call; raises ValueError unless it returns one finite, non-negative value per price."""
    units = np.empty(len(prices))
    for start in range(0, len(prices), EVALUATION_CHUNK_ROWS):
        part = slice(start, start + EVALUATION_CHUNK_ROWS)
        frame = offers.iloc[rows[part]].reset_index(drop=True)
        predicted = np.asarray(expected_units(frame, prices[part]), dtype=float)
        valid = predicted.shape == (len(frame),) and np.isfinite(predicted).all()
        if not valid or (predicted < 0).any():
            raise ValueError("expected_units must return one finite, non-negative value per price")
        units[part] = predicted
    return units


def _gain(profit: np.ndarray, rows: np.ndarray, is_current: np.ndarray,
          offers: int) -> np.ndarray:
    """Each point's profit minus the profit of its row's current price."""
    current = np.zeros(offers)
    current[rows[is_current]] = profit[is_current]
    return profit - current[rows]


def _evaluated(
    offers: pd.DataFrame, rows: np.ndarray, prices: np.ndarray, is_current: np.ndarray,
    ending_allowed: np.ndarray, demand: DemandCurves, stock: _Stock | None = None,
) -> _Points:
    """The points with their expected units (at most what the stock allows), profit,
    distance to the current price and the range of their profit gain over the scenarios."""
    fee_share = offers["fee_percent"].to_numpy()[rows] / 100
    if stock is None:
        unit_cost, cap = offers["unit_cost"].fillna(0).to_numpy()[rows], np.inf
    else:
        unit_cost, cap = stock.unit_cost[rows], stock.cap[rows]
    margin = prices * (1 - fee_share) - offers["fee_fixed"].to_numpy()[rows] - unit_cost
    distance = np.abs(prices - offers["current_price"].to_numpy()[rows])
    units = np.minimum(_predicted_units(offers, rows, prices, demand.expected_units), cap)
    gains = [_gain(margin * units, rows, is_current, len(offers))]
    for scenario in demand.scenarios:
        scenario_units = np.minimum(_predicted_units(offers, rows, prices, scenario), cap)
        gains.append(_gain(margin * scenario_units, rows, is_current, len(offers)))
    return _Points(rows, prices, is_current, ending_allowed, units, margin * units, distance,
                   np.min(gains, axis=0), np.max(gains, axis=0))


def _broken_rules(points: _Points, bounds: pd.DataFrame) -> np.ndarray:
    """(points x PRICE_RULES) booleans: which rules each point's price breaks."""
    prices = points.price

    def bound(column: str) -> np.ndarray:
        return bounds[column].to_numpy()[points.row]

    outside = {
        "min_margin": prices < bound("margin_floor") - TOLERANCE,
        "min_price": prices < bound("min_price") - TOLERANCE,
        "max_price": prices > bound("max_price") + TOLERANCE,
        "max_change": (prices < bound("change_low") - TOLERANCE)
        | (prices > bound("change_high") + TOLERANCE),
        "trust_band": (prices < bound("trust_low") - TOLERANCE)
        | (prices > bound("trust_high") + TOLERANCE),
        "stock": prices < bound("stock_low") - TOLERANCE,
        "price_endings": ~points.ending_allowed,
    }
    return np.column_stack([outside[rule] for rule in PRICE_RULES])


def _best_per_row(points: _Points, eligible: np.ndarray) -> pd.Series:
    """Row -> position of its most profitable eligible point; ties go to the price nearest the
    current one, then to the earlier (lower) grid price."""
    positions = np.flatnonzero(eligible)
    rows = points.row[positions]
    if not len(rows):
        return pd.Series(np.empty(0, np.int64), index=np.empty(0, np.int64))
    new_row = np.r_[True, rows[1:] != rows[:-1]]
    starts, group = np.flatnonzero(new_row), np.cumsum(new_row) - 1
    profit, distance = points.profit[positions], points.distance[positions]
    tied = profit == np.maximum.reduceat(profit, starts)[group]
    nearest = np.minimum.reduceat(np.where(tied, distance, np.inf), starts)[group]
    winners = np.flatnonzero(tied & (distance == nearest))
    winners = winners[np.r_[True, group[winners][1:] != group[winners][:-1]]]
    return pd.Series(positions[winners], index=rows[starts])


class _WindowArgmin:
    """Position of the smallest value in any window `values[start:stop]` in O(1) per window,
    from a sparse table of the argmin over every power-of-two window."""

    def __init__(self, values: np.ndarray):
        self.values = values
        self.tables = [np.arange(len(values))]
        width = 1
        while 2 * width <= len(values):
            previous = self.tables[-1]
            self.tables.append(self._smaller(previous[:-width], previous[width:]))
            width *= 2

    def _smaller(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return np.where(self.values[right] < self.values[left], right, left)

    def query(self, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
        """Argmin positions of the non-empty windows [starts, stops)."""
        levels = np.frexp(stops - starts)[1] - 1  # floor(log2(window length))
        positions = np.empty(len(starts), dtype=np.int64)
        for level in np.unique(levels):
            at = levels == level
            table = self.tables[level]
            positions[at] = self._smaller(table[starts[at]], table[stops[at] - (1 << level)])
        return positions


def _best_within_spread(points: _Points, positions: np.ndarray, spread: float,
                        value: np.ndarray) -> pd.Series | None:
    """Row -> point maximising the rows' total `value` (one per point) with every chosen price
    in [L, L * (1 + spread)] for some candidate price L; None when no L fits every row.
    `positions` are the candidate points of the rows, sorted by row, then price."""
    prices, rows = points.price[positions], points.row[positions]
    profit, distance = value[positions], points.distance[positions]
    preference = np.empty(len(prices), dtype=np.int64)
    preference[np.lexsort((prices, distance, -profit))] = np.arange(len(prices))
    item_rows, starts = np.unique(rows, return_index=True)
    stops = np.append(starts[1:], len(prices))
    lowest = np.unique(prices)
    windows = [
        (start + np.searchsorted(prices[start:stop], lowest - TOLERANCE, side="left"),
         start + np.searchsorted(prices[start:stop], lowest * (1 + spread) + TOLERANCE,
                                 side="right"))
        for start, stop in zip(starts, stops, strict=True)
    ]
    feasible = np.logical_and.reduce([stop > start for start, stop in windows])
    if not feasible.any():
        return None
    best_in = _WindowArgmin(preference)
    picks = np.stack([best_in.query(start[feasible], stop[feasible]) for start, stop in windows])
    order = np.lexsort((lowest[feasible], distance[picks].sum(axis=0), -profit[picks].sum(axis=0)))
    return pd.Series(positions[picks[:, order[0]]], index=item_rows)


def _spread_reason(
    offers: pd.DataFrame, points: _Points, positions: np.ndarray, spread_percent: float
) -> str:
    prices = pd.Series(points.price[positions], index=points.row[positions])
    ranges = prices.groupby(level=0).agg(["min", "max"])
    allowed = ", ".join(
        f"{offers.at[row, 'channel']} allows {low:.2f}-{high:.2f}"
        for row, (low, high) in ranges.iterrows()
    )
    return f"no prices fit within the {spread_percent:g}% channel spread: {allowed}"


def _rows_points(points: _Points, mask: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The positions of `mask`'s points of `rows`, sorted by row, then price."""
    selected = np.flatnonzero(mask)
    selected_rows = points.row[selected]
    first = np.searchsorted(selected_rows, rows, side="left")
    last = np.searchsorted(selected_rows, rows, side="right")
    positions = np.concatenate(
        [selected[start:stop] for start, stop in zip(first, last, strict=True)])
    return positions[np.lexsort((points.price[positions], points.row[positions]))]


def _choose_within_spread(
    offers: pd.DataFrame, points: _Points, eligible: np.ndarray, candidate: np.ndarray,
    best: pd.Series, guardrails: Guardrails,
) -> tuple[pd.Series, dict[int, str]]:
    """Row -> chosen point after the channel spread, and row -> reason for the rows of items
    whose channels cannot meet it. The item's channels take the most profitable eligible
    prices that meet the spread; when none do (the current prices break it and no confident
    move mends it), the candidates that meet it with the highest total gain lower bound: a
    forced move takes the least risk."""
    spread = guardrails.max_channel_spread_percent / 100
    items = offers["item_id"].to_numpy()[best.index]
    ranges = pd.Series(points.price[best.to_numpy()]).groupby(items)
    too_wide = ranges.max() > ranges.min() * (1 + spread) + TOLERANCE
    chosen, reasons = best.copy(), {}
    for item in too_wide.index[too_wide]:
        rows = best.index[items == item]
        positions = _rows_points(points, eligible, rows)
        picks = _best_within_spread(points, positions, spread, points.profit)
        if picks is None:
            positions = _rows_points(points, candidate, rows)
            picks = _best_within_spread(points, positions, spread, points.gain_low)
        if picks is None:
            reason = _spread_reason(offers, points, positions,
                                    guardrails.max_channel_spread_percent)
            reasons.update(dict.fromkeys(rows, reason))
            chosen = chosen.drop(rows)
        else:
            chosen.loc[picks.index] = picks.to_numpy()
    return chosen, reasons


def _endings_text(guardrails: Guardrails) -> str:
    return "/".join(f"{ending:.2f}".removeprefix("0") for ending in guardrails.price_endings)


def _conflict_reason(bound: pd.Series) -> str:
    lower = _LOWER_BOUNDS[bound["lower_rule"]][1]
    upper = _UPPER_BOUNDS[bound["upper_rule"]][1]
    return f"{lower} {bound['lower']:.2f} is above {upper} {bound['upper']:.2f}"


def _no_grid_price_reason(bound: pd.Series, guardrails: Guardrails) -> str:
    grid = (f"ending in {_endings_text(guardrails)}" if guardrails.price_endings
            else f"on the {guardrails.price_step:.2f} price step")
    lower = _LOWER_BOUNDS[bound["lower_rule"]][1]
    upper = _UPPER_BOUNDS[bound["upper_rule"]][1]
    return (f"no price {grid} lies between {lower} {bound['lower']:.2f} "
            f"and {upper} {bound['upper']:.2f}")


def _rule_text(rule: str, bound: pd.Series, guardrails: Guardrails) -> str:
    texts = {
        "min_margin": f"min margin {guardrails.min_margin_percent:g}% "
                      f"(floor {bound['margin_floor']:.2f})",
        "min_price": f"catalog min price {bound['min_price']:.2f}",
        "max_price": f"catalog max price {bound['max_price']:.2f}",
        "max_change": f"max change {guardrails.max_change_percent:g}%",
        "trust_band": f"trust band {bound['trust_low']:.2f}-{bound['trust_high']:.2f}",
        "stock": "stock sells out before restock: no discount",
        "channel_spread": f"channel spread {guardrails.max_channel_spread_percent:g}%",
        "price_endings": f"price endings {_endings_text(guardrails)}",
    }
    return texts[rule]


def _gain_text(gain: float, base: float) -> str:
    """A profit gain as a percentage of `base`, or in money when `base` is under a cent."""
    return f"{gain / base * 100:+.1f}%" if base >= 0.01 else f"{gain:+.2f}"


def _evidence_text(evidence: pd.Series | None) -> str:
    if evidence is None or pd.isna(evidence["elasticity"]):
        return ""
    own = (f"{evidence['evidence_share']:.0%} from its own sales at "
           f"{int(evidence['price_levels'])} prices" if evidence["evidence_share"] >= 0.005
           else "pooled from its peers, never repriced")
    return (f"; elasticity {evidence['elasticity']:.2f} ({evidence['elasticity_low']:.2f}-"
            f"{evidence['elasticity_high']:.2f}), {own}")


@dataclass(frozen=True)
class _Move:
    """A price and its expected profit with the range of its gain over the current price."""

    price: float
    profit: float
    gain_low: float
    gain_high: float


def _doubt(rejected: _Move, current: _Move, guardrails: Guardrails) -> str:
    """Why a move with an expected gain was not made (`optimize_prices`' decision rule)."""
    if rejected.gain_low <= 0:
        return "includes a loss"
    if rejected.gain_low <= guardrails.min_gain_percent / 100 * max(current.profit, 0.0):
        return f"starts below the {guardrails.min_gain_percent:g}% minimum gain"
    return f"rests on less than {guardrails.min_evidence_share:.0%} of its own evidence"


def _explanation(channel: str, current: _Move, suggested: _Move, rejected: _Move | None,
                 interval: str, bound_texts: list[str], evidence: pd.Series | None,
                 guardrails: Guardrails) -> str:
    """One line for merchandisers: the decision, its expected gain with its interval, the
    rules that bound it and the evidence for the price response."""
    base = current.profit
    if suggested.price != current.price:
        verb = "Raise" if suggested.price > current.price else "Lower"
        gain = suggested.profit - base
        head = (f"{verb} {channel} price {current.price:.2f} -> {suggested.price:.2f}: "
                f"expected profit {_gain_text(gain, base)}")
        if suggested.gain_low < gain or suggested.gain_high > gain:
            head += (f" ({interval} interval {_gain_text(suggested.gain_low, base)} to "
                     f"{_gain_text(suggested.gain_high, base)})")
    elif rejected is not None:
        verb = "raising" if rejected.price > current.price else "lowering"
        head = (f"Keep {channel} price {current.price:.2f}: {verb} to {rejected.price:.2f} "
                f"would gain {_gain_text(rejected.profit - base, base)} expected, but its "
                f"{interval} interval {_gain_text(rejected.gain_low, base)} to "
                f"{_gain_text(rejected.gain_high, base)} {_doubt(rejected, current, guardrails)}")
    else:
        head = f"Keep {channel} price {current.price:.2f}: the most profitable allowed price"
    bound = f" (bound by {', '.join(bound_texts)})" if bound_texts else ""
    return head + bound + _evidence_text(evidence)


def _stock_text(stock: _Stock, row: int, guardrails: Guardrails) -> str:
    """The item's stock position, when it changed how its price was chosen."""
    cover = stock.days_of_cover[row]
    if stock.scarce[row]:
        return f"; scarce: stock lasts {cover:.0f} days at current prices, sales capped by it"
    if stock.overstocked[row]:
        return (f"; overstocked: {cover:.0f} days of stock, units costed at "
                f"{guardrails.overstock_cost_share:.0%} of unit cost")
    return ""


def _move(points: _Points, position: int) -> _Move:
    return _Move(float(points.price[position]), float(points.profit[position]),
                 float(points.gain_low[position]), float(points.gain_high[position]))


@dataclass(frozen=True)
class _Decisions:
    """Row -> point: the chosen one, each row's best eligible one before the channel spread,
    the best allowed one whatever the confidence, and the unconstrained best."""

    chosen: pd.Series
    best: pd.Series
    best_allowed: pd.Series
    unconstrained: pd.Series


def _suggestions(
    offers: pd.DataFrame, points: _Points, decisions: _Decisions, broken: np.ndarray,
    bounds: pd.DataFrame, guardrails: Guardrails, demand: DemandCurves, stock: _Stock,
    model_version: str,
) -> pd.DataFrame:
    chosen = decisions.chosen.sort_index()
    rows, suggested = chosen.index.to_numpy(), chosen.to_numpy()
    current_points = np.flatnonzero(points.is_current)
    current = pd.Series(current_points, index=points.row[current_points]).loc[rows].to_numpy()
    broken_by_best = broken[decisions.unconstrained.loc[rows].to_numpy()]
    moved_by_spread = suggested != decisions.best.loc[rows].to_numpy()
    bound_by = [
        [rule for rule in RULES
         if (rule == "channel_spread" and moved) or (
             rule in PRICE_RULES and breaks[PRICE_RULES.index(rule)])]
        for breaks, moved in zip(broken_by_best, moved_by_spread, strict=True)
    ]
    evidence = (pd.DataFrame(np.nan, index=range(len(offers)), columns=list(EVIDENCE_COLUMNS))
                if demand.evidence is None else demand.evidence.reset_index(drop=True))
    allowed = decisions.best_allowed.reindex(rows).to_numpy()
    interval = "uncertainty" if not demand.scenarios else "confidence"
    channels = offers["channel"].to_numpy()[rows]
    explanations = []
    for row, channel, now, new, alternative, rules in zip(
            rows, channels, current, suggested, allowed, bound_by, strict=True):
        rejected = (_move(points, alternative)
                    if new == now and alternative != now and demand.scenarios else None)
        explanations.append(_explanation(
            channel, _move(points, now), _move(points, new), rejected, interval,
            [_rule_text(rule, bounds.loc[row], guardrails) for rule in rules],
            evidence.loc[row] if demand.evidence is not None else None, guardrails)
            + _stock_text(stock, row, guardrails))
    kept = suggested == current
    return pd.DataFrame({
        "item_id": offers["item_id"].to_numpy()[rows],
        "channel": channels,
        "current_price": points.price[current],
        "suggested_price": points.price[suggested],
        "expected_units_current": points.units[current],
        "expected_units_suggested": points.units[suggested],
        "expected_revenue_current": points.price[current] * points.units[current],
        "expected_revenue_suggested": points.price[suggested] * points.units[suggested],
        "expected_profit_current": points.profit[current],
        "expected_profit_suggested": points.profit[suggested],
        "expected_profit_gain_low": np.where(kept, 0.0, points.gain_low[suggested]),
        "expected_profit_gain_high": np.where(kept, 0.0, points.gain_high[suggested]),
        **{column: evidence[column].to_numpy(dtype=float)[rows]
           for column in EVIDENCE_COLUMNS if column != "price_levels"},
        "bound_by": pd.Series(bound_by, dtype=object),
        "model_version": model_version,
        "explanation": pd.Series(explanations, dtype=object),
        "price_floor": bounds["lower"].to_numpy()[rows],
        "price_floor_rule": bounds["lower_rule"].to_numpy()[rows],
        "price_ceiling": bounds["upper"].to_numpy()[rows],
        "price_ceiling_rule": bounds["upper_rule"].to_numpy()[rows],
    }, columns=list(SUGGESTION_COLUMNS))


def _as_curves(demand: ExpectedUnits | DemandCurves) -> DemandCurves:
    return demand if isinstance(demand, DemandCurves) else DemandCurves(demand)


def optimize_prices(
    offers: pd.DataFrame, demand: ExpectedUnits | DemandCurves, guardrails: Guardrails,
    model_version: str,
) -> OptimizationResult:
    """Suggest the most profitable price of every offer (item x channel) that breaks no rule
    and, when `demand` has scenarios, gains over the current price in every one of them.

    `offers` holds the `OFFER_COLUMNS` (and any column the demand model needs); `demand` is
    `DemandCurves` or just `expected_units(rows, prices)`, the expected units of each row of
    `rows` (offers, one per price) at its price. Offers no price can satisfy land in
    `skipped` with a reason.
    """
    demand = _as_curves(demand)
    offers = _checked_offers(offers)
    if demand.evidence is not None and len(demand.evidence) != len(offers):
        raise ValueError("demand evidence must have one row per offer")
    stock = _stock(offers, demand, guardrails)
    bounds = _rule_bounds(offers, guardrails, stock.scarce)
    observed = offers["observed_min_price"].notna().to_numpy()
    crossed = bounds["lower"].to_numpy() > bounds["upper"].to_numpy() + TOLERANCE
    reasons: dict[int, str] = dict.fromkeys(
        (int(row) for row in np.flatnonzero(~observed)), NO_OBSERVATIONS_REASON)
    reasons |= {int(row): _conflict_reason(bounds.loc[row])
                for row in np.flatnonzero(observed & crossed)}

    open_rows = np.flatnonzero(observed & ~crossed)
    current = offers["current_price"].to_numpy()[open_rows]
    low, high = WIDE_GRID_FACTORS
    grid = _grid_prices(
        offers, open_rows,
        np.minimum(current * low, bounds["lower"].to_numpy()[open_rows]),
        np.maximum(current * high, bounds["upper"].to_numpy()[open_rows]),
        guardrails,
    )
    points = _evaluated(offers, *grid, demand, stock)
    broken = _broken_rules(points, bounds)
    candidate = np.asarray(~broken.any(axis=1))
    # An offer whose current price breaks a rule must move, whatever the confidence.
    must_move = np.ones(len(offers), dtype=bool)
    must_move[points.row[points.is_current & candidate]] = False
    confident = np.ones(len(points.row), dtype=bool)
    if demand.scenarios:  # a move must gain enough in every scenario, on the offer's evidence
        current_profit = np.zeros(len(offers))
        current_profit[points.row[points.is_current]] = points.profit[points.is_current]
        least = guardrails.min_gain_percent / 100 * np.maximum(current_profit, 0.0)
        confident = points.is_current | (points.gain_low > least[points.row])
        if demand.evidence is not None:
            own = demand.evidence["evidence_share"].to_numpy(dtype=float)
            confident &= points.is_current | (own[points.row] >= guardrails.min_evidence_share)
    eligible = candidate & (confident | must_move[points.row])
    best = _best_per_row(points, eligible)
    reasons |= {row: _no_grid_price_reason(bounds.loc[row], guardrails)
                for row in np.setdiff1d(open_rows, best.index)}
    chosen, spread_reasons = _choose_within_spread(offers, points, eligible, candidate, best,
                                                   guardrails)
    reasons |= spread_reasons

    decisions = _Decisions(chosen, best, _best_per_row(points, candidate),
                           _best_per_row(points, confident | must_move[points.row]))
    suggestions = _suggestions(offers, points, decisions, broken, bounds, guardrails, demand,
                               stock, model_version)
    skipped_rows = sorted(reasons)
    skipped = pd.DataFrame({
        "item_id": offers["item_id"].to_numpy()[skipped_rows],
        "channel": offers["channel"].to_numpy()[skipped_rows],
        "reason": [reasons[row] for row in skipped_rows],
    }, columns=list(SKIPPED_COLUMNS))
    return OptimizationResult(suggestions=suggestions, skipped=skipped)


def naive_argmax(
    offers: pd.DataFrame, expected_units: ExpectedUnits,
    grid_factors: Sequence[float] = NAIVE_GRID_FACTORS,
) -> pd.DataFrame:
    """The most profitable price of each offer among `current_price * grid_factors`, ignoring
    every guardrail (a baseline for evaluations): columns item_id, channel, price."""
    offers = _checked_offers(offers)
    factors = np.asarray(grid_factors, dtype=float)
    if not len(factors) or not (np.isfinite(factors) & (factors > 0)).all():
        raise ValueError("grid_factors must be a non-empty sequence of positive numbers")
    rows = np.repeat(np.arange(len(offers)), len(factors))
    prices = offers["current_price"].to_numpy()[rows] * np.tile(factors, len(offers))
    not_current = np.zeros(len(rows), dtype=bool)
    points = _evaluated(offers, rows, prices, not_current, ~not_current,
                        DemandCurves(expected_units))
    best = _best_per_row(points, np.ones(len(rows), dtype=bool)).to_numpy()
    return pd.DataFrame({
        "item_id": offers["item_id"].to_numpy()[rows[best]],
        "channel": offers["channel"].to_numpy()[rows[best]],
        "price": prices[best],
    })
