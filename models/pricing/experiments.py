"""Price tests: which offers the decision rule keeps for want of evidence are worth a deliberate
price test, at which price, and what the test is expected to cost and to earn.

The decision rule (`models.pricing.optimizer`) keeps a price when the data cannot tell whether a
move gains. For an offer sold at one price all along that state lasts: however long its history
at that price, it says nothing about the offer's elasticity. A test (the offer sold at another
allowed price for `test_days`, then back at its current price) brings that evidence. Whether it
is worth its cost is a value-of-information question (preposterior analysis, Raiffa and
Schlaifer, 1961), answered per offer on the demand model's own posterior:

- Now the offer's elasticity at its reference price is N(m, s^2) (`PriceResponse.for_rows`).
- A test at price p_t informs it by I = (g(p_t) - g(p_0))^2 * h / dispersion, with g the
  response shape, p_0 the current price and h = T u_t T u_0 / (T u_t + T u_0) for T periods of
  u_t expected units at p_t against as many at p_0 (a conservative count: the history at the
  current price is usually longer). After it the sd is s_1 = (1 / s^2 + I)^-1/2, and the mean,
  seen from now, is N(m, s^2 - s_1^2).
- At `NODES` Gauss-Hermite nodes of that mean the decision rule is applied as the optimizer
  applies it: the most profitable allowed price whose gain over the current price stays above
  `Guardrails.min_gain_percent` of the current profit at both ends of the
  `confidence_percent` interval, else the current price. The mean of the nodes' expected gains,
  less that of today's decision, is what the test is worth per period; `horizon_days` of such
  periods after the test are counted (`expected_value`).
- Its cost is the profit lost at p_t over the test: `expected_cost` at the posterior's centre
  (negative where the model expects the test price to earn more, without the confidence to
  move there) and `cost_at_confidence` at the worse end of the `confidence_percent` interval.
  A test is judged by the latter, as the rule judges a move: the planned gains of tests chosen
  for their expected cost come out optimistic (the tests go where the centre errs towards a
  gain), and a test must pay for itself even when the response is at the bad end of what the
  data allow.

Each offer the rule keeps takes the test price with the highest net value (value - cost at
confidence) among
`TEST_CHANGES` of its current price, snapped to the allowed grid within its suggestion's floor
and ceiling (so a test breaks no per-price rule); tests that would change the later decision
(a positive value) and are worth more than they cost are proposed, best first, one per offer,
while an item's prices stay within `max_channel_spread_percent`.
Stated approximations: profit is evaluated at the posterior's centre (as the optimizer does),
stock and the channel spread of the later decision are left out of the value, and an item's
channels are valued apart, though a test on one channel also informs the others through the
pooled fit (there the value is understated).
"""

from statistics import NormalDist

import numpy as np
import pandas as pd
from numpy.polynomial.hermite_e import hermegauss

from models.pricing.demand import PERIOD_LENGTHS, DemandModel, Period
from models.pricing.elasticity import price_ratio
from models.pricing.guardrails import Guardrails
from models.pricing.optimizer import grid_prices_between

NODES = 9  # Gauss-Hermite nodes of the posterior mean a test may leave
DECISION_PRICES = 41  # the later decision is valued on at most this many prices per offer
TEST_CHANGES = (-0.2, -0.15, -0.1, -0.05, 0.05, 0.1, 0.15, 0.2)  # test prices tried, relative
# to the current price (the nearest allowed price to each)
TEST_COLUMNS = (
    "item_id", "channel", "current_price", "test_price", "test_days", "elasticity",
    "elasticity_sd", "elasticity_sd_after", "expected_cost", "cost_at_confidence",
    "expected_value", "net_value", "explanation",
)


def _z(guardrails: Guardrails) -> float:
    """The normal quantile of the two-sided `confidence_percent` interval."""
    return NormalDist().inv_cdf(0.5 + guardrails.confidence_percent / 200)


def _padded(owner: np.ndarray, values: np.ndarray, rows: int) -> np.ndarray:
    """`values` grouped by `owner` (ascending, in 0..rows-1) as a rows x widest array,
    NaN-padded."""
    counts = np.bincount(owner, minlength=rows)
    width = max(int(counts.max()) if len(counts) else 0, 1)
    slot = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    padded = np.full((rows, width), np.nan)
    padded[owner, slot] = values
    return padded


def _thinned(prices: np.ndarray, keep: int) -> np.ndarray:
    """At most `keep` of each row's prices (NaN-padded, ascending), evenly spread, ends
    included."""
    if prices.shape[1] <= keep:
        return prices
    counts = np.sum(~np.isnan(prices), axis=1)
    picks = np.round(np.linspace(0, 1, keep)[None, :] * (np.maximum(counts, 1) - 1)[:, None])
    return np.take_along_axis(prices, picks.astype(int), axis=1)


class _Profit:
    """Offers' expected profit per period at any price under any elasticity (at the reference
    price), pinned to the model's expected units at the current price. Arrays are offers x
    tests x nodes x prices."""

    def __init__(self, model: DemandModel, offers: pd.DataFrame):
        response = model.price_response
        self.found = response.for_rows(offers)
        self.shape = lambda prices: response.shape(self.found, prices)
        self.current = offers["current_price"].to_numpy(dtype=float)
        self.units = model.predict_at_prices(offers, self.current)
        self.keep_share = 1 - offers["fee_percent"].to_numpy(dtype=float) / 100
        self.unit_cost = (offers["fee_fixed"].to_numpy(dtype=float)
                          + np.nan_to_num(offers["unit_cost"].to_numpy(dtype=float)))
        self.profit_now = self.units * self.margin(self.current)

    def margin(self, prices: np.ndarray) -> np.ndarray:
        keep_share, unit_cost = (a.reshape(a.shape + (1,) * (np.ndim(prices) - 1))
                                 for a in (self.keep_share, self.unit_cost))
        return prices * keep_share - unit_cost

    def units_at(self, prices: np.ndarray, elasticity: np.ndarray) -> np.ndarray:
        """Expected units at `prices` (offers x k) under `elasticity` (offers x k)."""
        move = self.shape(prices) - self.shape(self.current)[:, None]
        return self.units[:, None] * np.exp(-np.maximum(elasticity, 0.0) * move)

    def decision_gain(self, prices: np.ndarray, centre: np.ndarray, sd: np.ndarray,
                      guardrails: Guardrails) -> np.ndarray:
        """The rule's decision among `prices` (offers x P, NaN-padded) when each offer's
        elasticity is N(centre, sd^2) (offers x tests x nodes): its expected gain per period
        over the current price, at that centre (0 when it keeps the price)."""
        z = _z(guardrails)
        move = (self.shape(np.nan_to_num(prices, nan=1.0))
                - self.shape(self.current)[:, None])[:, None, None, :]
        margin = self.margin(prices)[:, None, None, :]
        units, now = self.units[:, None, None, None], self.profit_now[:, None, None, None]

        def gain(elasticity: np.ndarray) -> np.ndarray:
            return units * margin * np.exp(-np.maximum(elasticity, 0.0)[..., None] * move) - now

        low = np.minimum(gain(centre - z * sd), gain(centre + z * sd))
        least = guardrails.min_gain_percent / 100 * np.maximum(now, 0.0)
        eligible = (low > least) & ~np.isnan(prices)[:, None, None, :]
        return np.max(np.where(eligible, gain(centre), 0.0), axis=-1, initial=0.0)


def _test_prices(grid: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Per offer, the allowed price nearest to each of `TEST_CHANGES` of its current price
    (offers x changes), NaN where none differs from the current price."""
    targets = current[:, None] * (1 + np.asarray(TEST_CHANGES))[None, :]
    distance = np.abs(grid[:, None, :] - targets[:, :, None])
    nearest = np.argmin(np.where(np.isnan(distance), np.inf, distance), axis=-1)
    tests = np.take_along_axis(grid, nearest, axis=1)
    return np.where(np.abs(tests - current[:, None]) > 0.005, tests, np.nan)


def _within_spread(chosen: dict[str, float], prices: dict[str, float], spread: float) -> bool:
    values = list({**prices, **chosen}.values())
    return max(values) <= min(values) * (1 + spread) + 1e-9


def _explanation(row: pd.Series, confidence: float) -> str:
    change = row["test_price"] / row["current_price"] - 1
    return (f"test {row['test_price']:.2f} ({change:+.0%}) for {row['test_days']} days, then "
            f"back to {row['current_price']:.2f}: elasticity {row['elasticity']:.2f} "
            f"+- {row['elasticity_sd']:.2f} (sd) is too uncertain to move at "
            f"{confidence:g}% confidence; the test should narrow it to +- "
            f"{row['elasticity_sd_after']:.2f}, worth about {row['expected_value']:,.2f} in "
            f"expected profit afterwards, for a cost of {row['expected_cost']:,.2f} expected and "
            f"at most {row['cost_at_confidence']:,.2f} at {confidence:g}% confidence")


def plan_price_tests(
    model: DemandModel, offers: pd.DataFrame, suggestions: pd.DataFrame, guardrails: Guardrails,
    period: Period = "W", test_days: int = 28, horizon_days: int = 182,
    max_tests: int | None = None,
) -> pd.DataFrame:
    """Price tests worth running (`TEST_COLUMNS`, best net value first): for the offers whose
    suggestion keeps the current price, the allowed test price whose expected value (the
    better decisions its evidence allows over `horizon_days` after it) most exceeds its cost
    over `test_days` at the guardrails' confidence, when it does; at most one per offer,
    `max_tests` in all.
    `suggestions` are the optimizer's for `offers` with `model` under `guardrails`; `period`
    is the model's."""
    for name, value in (("test_days", test_days), ("horizon_days", horizon_days)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if max_tests is not None and max_tests < 0:
        raise ValueError(f"max_tests must be >= 0, got {max_tests}")
    keys = ["item_id", "channel"]
    kept = suggestions.loc[suggestions["suggested_price"] == suggestions["current_price"],
                           [*keys, "price_floor", "price_ceiling"]]
    rows = offers.merge(kept, on=keys, how="inner", validate="one_to_one")
    if rows.empty:
        return pd.DataFrame(columns=list(TEST_COLUMNS))
    n, period_days = len(rows), PERIOD_LENGTHS[period].days
    profit = _Profit(model, rows)
    owner, prices = grid_prices_between(rows["price_floor"].to_numpy(dtype=float),
                                        rows["price_ceiling"].to_numpy(dtype=float), guardrails)
    grid = _padded(owner, prices, n)
    tests = _test_prices(grid, profit.current)
    valid = ~np.isnan(tests)
    tests = np.where(valid, tests, profit.current[:, None])

    mean = profit.found["elasticity"].to_numpy(dtype=float)
    sd = np.maximum(profit.found["elasticity_sd"].to_numpy(dtype=float), 1e-9)
    ratio = price_ratio(profit.current, profit.found["reference_price"].to_numpy(dtype=float))
    to_current = ratio ** model.price_response.curvature  # elasticity at the current price
    test_periods = test_days / period_days
    units_test = profit.units_at(tests, np.repeat(mean[:, None], tests.shape[1], axis=1))
    move = profit.shape(tests) - profit.shape(profit.current)[:, None]
    at_test, at_current = test_periods * units_test, test_periods * profit.units[:, None]
    counted = at_test * at_current / np.maximum(at_test + at_current, 1e-12)
    information = move**2 * counted / model.price_response.dispersion
    sd_after = 1 / np.sqrt(1 / sd[:, None] ** 2 + information)
    spread = np.sqrt(np.maximum(sd[:, None] ** 2 - sd_after**2, 0.0))
    nodes, weights = hermegauss(NODES)
    decision = _thinned(grid, DECISION_PRICES)
    after = profit.decision_gain(decision, mean[:, None, None] + spread[..., None] * nodes,
                                 sd_after[..., None], guardrails) @ (weights / weights.sum())
    now = profit.decision_gain(decision, mean[:, None, None], sd[:, None, None],
                               guardrails)[:, 0, 0]
    value = (after - now[:, None]) * horizon_days / period_days
    z = _z(guardrails)

    def cost_at(elasticity: np.ndarray) -> np.ndarray:
        units = profit.units_at(tests, np.repeat(elasticity[:, None], tests.shape[1], axis=1))
        return test_periods * (profit.profit_now[:, None] - units * profit.margin(tests))

    cost = cost_at(mean)
    worst = np.maximum(cost_at(mean - z * sd), cost_at(mean + z * sd))
    net = np.where(valid & (value > 0), value - worst, -np.inf)

    current_prices = {item: dict(zip(group["channel"], group["suggested_price"], strict=True))
                      for item, group in suggestions.groupby("item_id")}
    spread_limit = guardrails.max_channel_spread_percent / 100
    chosen: dict[str, dict[str, float]] = {}
    picked: list[tuple[int, int]] = []
    order = np.argsort(-net, axis=None, kind="stable")
    for flat in order[:int(np.sum(net > 0))]:
        if max_tests is not None and len(picked) >= max_tests:
            break
        row, column = divmod(int(flat), tests.shape[1])
        item, channel = rows.at[row, "item_id"], rows.at[row, "channel"]
        item_tests = chosen.setdefault(item, {})
        if channel in item_tests:
            continue
        if not _within_spread({**item_tests, channel: tests[row, column]},
                              current_prices[item], spread_limit):
            continue
        item_tests[channel] = tests[row, column]
        picked.append((row, column))
    picked_rows = np.array([row for row, _ in picked], dtype=int)
    picked_columns = np.array([column for _, column in picked], dtype=int)
    planned = pd.DataFrame({
        "item_id": rows["item_id"].to_numpy()[picked_rows],
        "channel": rows["channel"].to_numpy()[picked_rows],
        "current_price": profit.current[picked_rows],
        "test_price": tests[picked_rows, picked_columns],
        "test_days": test_days,
        "elasticity": (mean * to_current)[picked_rows],
        "elasticity_sd": (sd * to_current)[picked_rows],
        "elasticity_sd_after": (sd_after * to_current[:, None])[picked_rows, picked_columns],
        "expected_cost": cost[picked_rows, picked_columns],
        "cost_at_confidence": worst[picked_rows, picked_columns],
        "expected_value": value[picked_rows, picked_columns],
        "net_value": net[picked_rows, picked_columns],
    })
    planned["explanation"] = [_explanation(row, guardrails.confidence_percent)
                              for _, row in planned.iterrows()]
    return planned[list(TEST_COLUMNS)]
