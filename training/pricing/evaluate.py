"""`tailor evaluate pricing`: suggestions on a simulated market scored with its hidden truth.

The demand model trains on the events; the ground truth is read only after the suggestions are
made. Strategies compared on the expected profit of the first day after the history: the
suggestions, keeping current prices, the model's unconstrained argmax, and the oracle (the
optimizer on the true demand under the same guardrails).
"""

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import InputError
from features.simulator import (
    TRUTH_PARAMETERS,
    SimulatedMarket,
    continue_market,
    expected_daily_units,
    simulate_market,
    write_simulation,
)
from features.timestamps import to_utc
from models.pricing.demand import Period, demand_curves
from models.pricing.experiments import plan_price_tests
from models.pricing.guardrails import Guardrails
from models.pricing.offers import SERIES_KEYS, build_offers, default_as_of
from models.pricing.optimizer import OFFER_COLUMNS, naive_argmax, optimize_prices
from training.pricing.fit import fit_demand
from training.pricing.market import read_simulation

CHECK_SLACK = 1e-6  # absolute slack of the independent guardrail checks (float rounding)


def guardrail_violations(
    offers: pd.DataFrame, prices: pd.DataFrame, guardrails: Guardrails
) -> dict[str, int]:
    """Per rule, the rows of `prices` (item_id, channel, suggested_price) that break it, each
    rule re-checked on its own from the offers; "channel_spread" counts items whose suggested
    channel prices spread too far."""
    rows = prices[[*SERIES_KEYS, "suggested_price"]].merge(
        offers, on=SERIES_KEYS, how="left", validate="one_to_one")
    price = rows["suggested_price"].to_numpy(dtype=float)
    current = rows["current_price"].to_numpy(dtype=float)
    floor = guardrails.margin_floor(rows["unit_cost"], rows["fee_percent"], rows["fee_fixed"])
    change = guardrails.max_change_percent / 100
    trust = guardrails.trust_band_percent / 100
    cents = np.round(price * 100)
    on_cents = np.abs(price * 100 - cents) < 1e-6
    if guardrails.price_endings:
        endings = [round(ending * 100) for ending in guardrails.price_endings]
        ending_ok = on_cents & np.isin(cents % 100, endings)
    else:
        step = round(guardrails.price_step * 100)
        ending_ok = (on_cents & (cents % step == 0)) | (np.abs(price - current) < CHECK_SLACK)
    max_price = rows["max_price"].to_numpy(dtype=float)
    checks = {
        "min_margin": price < floor - CHECK_SLACK,
        "min_price": price < rows["min_price"].to_numpy(dtype=float) - CHECK_SLACK,
        "max_price": ~np.isnan(max_price) & (price > max_price + CHECK_SLACK),
        "max_change": np.abs(price - current) > change * current + CHECK_SLACK,
        "trust_band":
            (price < np.minimum(rows["observed_min_price"].to_numpy(dtype=float), current)
             * (1 - trust) - CHECK_SLACK)
            | (price > np.maximum(rows["observed_max_price"].to_numpy(dtype=float), current)
               * (1 + trust) + CHECK_SLACK),
        "price_endings": ~ending_ok,
    }
    counts = {rule: int(np.sum(broken)) for rule, broken in checks.items()}
    by_item = rows.groupby("item_id")["suggested_price"].agg(["min", "max"])
    spread = guardrails.max_channel_spread_percent / 100
    counts["channel_spread"] = int(
        (by_item["max"] > by_item["min"] * (1 + spread) + CHECK_SLACK).sum())
    return counts


def _true_profit(truth_rows: pd.DataFrame, price: np.ndarray, day) -> np.ndarray:
    """Each offer's true expected profit per day at `price` on `day` (one per row, or rows x
    days arrays)."""
    price = np.asarray(price, dtype=float)
    units = expected_daily_units(truth_rows, price, day)
    fee_percent, fee_fixed, unit_cost = (
        truth_rows[name].to_numpy().reshape((-1,) + (1,) * (price.ndim - 1))
        for name in ("fee_percent", "fee_fixed", "unit_cost"))
    return units * (price * (1 - fee_percent / 100) - fee_fixed - unit_cost)


def true_elasticity(truth_rows: pd.DataFrame, price: np.ndarray, day: int,
                    step: float = 1e-3) -> np.ndarray:
    """Each truth row's elasticity |d ln q / d ln p| at `price` on day `day` (a central
    difference of the log of the true demand, `step` in log price either side); NaN where
    the true demand is 0 there."""
    price = np.asarray(price, dtype=float)
    up = expected_daily_units(truth_rows, price * np.exp(step), day)
    down = expected_daily_units(truth_rows, price * np.exp(-step), day)
    with np.errstate(divide="ignore", invalid="ignore"):
        elasticity = (np.log(down) - np.log(up)) / (2 * step)
    return np.where(np.isfinite(elasticity), elasticity, np.nan)


def _share(mask: np.ndarray, among: np.ndarray) -> float:
    return float(mask[among].mean()) if among.any() else float("nan")


def _priced(offers: pd.DataFrame, chosen: pd.DataFrame, column: str) -> np.ndarray:
    """Each offer's price in `chosen` (item_id, channel, `column`), else its current price."""
    key = pd.MultiIndex.from_frame(offers[SERIES_KEYS])
    prices = chosen.set_index(SERIES_KEYS)[column].reindex(key).to_numpy(dtype=float)
    return np.where(np.isnan(prices), offers["current_price"].to_numpy(dtype=float), prices)


def _read_truth(sim_dir: Path, offers: pd.DataFrame, as_of: pd.Timestamp):
    """The truth rows of the offers (same order) and the day index of `as_of`."""
    path = Path(sim_dir) / "ground_truth.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"ground truth file not found: {path}")
    truth = pd.read_parquet(path)
    start = to_utc(pd.Timestamp(truth["start"].iloc[0]))
    day = int((as_of - start) / pd.Timedelta(days=1))
    truth = truth.drop(columns=["start"]).set_index(SERIES_KEYS)
    rows = truth.reindex(pd.MultiIndex.from_frame(offers[SERIES_KEYS])).reset_index()
    if rows["elasticity"].isna().any():
        raise InputError(f"{path}: no truth for some offers")
    return rows, day


def evaluate_pricing(
    sim_dir: Path, guardrails: Guardrails | None = None, period: Period = "W",
    rule_confidences: Sequence[float] = (), **params
) -> dict:
    """Score a simulated market's suggestions with its ground truth.

    The demand model trains on the events (`fit_demand`; the ground truth is read only after
    the suggestions are made) and prices every offer as of the end of the history. Each
    strategy's expected profit on the first day after the history, by the true demand, sums
    over all offers: the suggestions, keeping the current prices, the model's unconstrained
    `naive_argmax`, and the oracle (the optimizer on the true demand, same guardrails).
    Skipped offers keep their current price in every strategy. Fractions divide by the
    oracle's profit; `uplift_capture` = (suggestions - keep) / (oracle - keep);
    `moved_losing_share` is the share of the offers whose price moved whose true profit fell;
    `violations` counts suggestions breaking a rule, re-checked one by one;
    `interval_coverage` is the share of offers whose elasticity interval at the guardrails'
    confidence (`demand_curves`' evidence) holds the true elasticity at the current price,
    `moved_interval_coverage` the same among the moved offers (NaN when none moved);
    `gain_over_keep` the suggestions' profit less keeping's. Also returned: each strategy's
    `<name>_profit`, `violations_by_rule`, the market's demand `family`, the model's
    `validation` scores and `prices` (a DataFrame: every offer's price in each strategy).
    With `rule_confidences`, `rules` scores the same fit's suggestions under each of those
    `confidence_percent`s of the decision rule (`RULE_COLUMNS`): how much a merchandiser's
    appetite for risk buys and costs.
    """
    guardrails = guardrails or Guardrails()
    market = read_simulation(sim_dir)
    as_of = default_as_of(market.events)
    fitted = fit_demand(market.events, market.catalog, period, end=as_of, **params)
    offers = build_offers(market.events, market.catalog, market.channels, as_of, period,
                          market.channel_prices, fitted.model)
    demand = demand_curves(fitted.model, offers, guardrails.confidence_percent)
    result = optimize_prices(offers, demand, guardrails, "evaluation")
    naive = naive_argmax(offers, demand.expected_units)
    ruled = {confidence: optimize_prices(
        offers, demand_curves(fitted.model, offers, confidence),
        guardrails.model_copy(update={"confidence_percent": confidence}), "evaluation")
        for confidence in rule_confidences}

    # The ground truth, from here on only.
    truth_rows, day = _read_truth(sim_dir, offers, as_of)
    truth_offers = offers[list(OFFER_COLUMNS)].assign(**{
        column: truth_rows[column].to_numpy() for column in TRUTH_PARAMETERS})

    def true_units(rows: pd.DataFrame, prices: np.ndarray) -> np.ndarray:
        return expected_daily_units(rows, prices, day)

    oracle = optimize_prices(truth_offers, true_units, guardrails, "oracle")
    strategies = {
        "suggestions": _priced(offers, result.suggestions, "suggested_price"),
        "keep_current": offers["current_price"].to_numpy(dtype=float),
        "naive_argmax": _priced(offers, naive, "price"),
        "oracle": _priced(offers, oracle.suggestions, "suggested_price"),
    }
    by_offer = {name: _true_profit(truth_rows, prices, day)
                for name, prices in strategies.items()}
    profits = {name: float(values.sum()) for name, values in by_offer.items()}
    violations = guardrail_violations(offers, result.suggestions, guardrails)
    available = profits["oracle"] - profits["keep_current"]

    def outcome(prices: np.ndarray) -> tuple[np.ndarray, dict]:
        """Which offers `prices` move, and their uplift capture, number of moves, share of
        moves losing profit and profit over keeping current prices."""
        profit = _true_profit(truth_rows, prices, day)
        moved = prices != strategies["keep_current"]
        losing = moved & (profit < by_offer["keep_current"] - CHECK_SLACK)
        gain = float(profit.sum()) - profits["keep_current"]
        return moved, {
            "uplift_capture": gain / available if available > 0 else float("nan"),
            "moved": int(moved.sum()),
            "moved_losing_share": _share(losing, moved) if moved.any() else 0.0,
            "gain_over_keep": gain}

    moved, scores = outcome(strategies["suggestions"])
    rules = [{"confidence_percent": confidence,
              **outcome(_priced(offers, ruled_result.suggestions, "suggested_price"))[1],
              "violations": sum(guardrail_violations(offers, ruled_result.suggestions,
                                                     guardrails).values())}
             for confidence, ruled_result in ruled.items()]
    elasticity = true_elasticity(truth_rows, strategies["keep_current"], day)
    evidence = demand.evidence
    assert evidence is not None  # demand_curves gives every offer's interval
    covered = ((elasticity >= evidence["elasticity_low"].to_numpy(dtype=float))
               & (elasticity <= evidence["elasticity_high"].to_numpy(dtype=float)))
    known = np.isfinite(elasticity)
    return {
        "family": str(truth_rows["family"].iloc[0]) if "family" in truth_rows else "exponential",
        **scores,
        "oracle_fraction": profits["suggestions"] / profits["oracle"],
        "keep_current_fraction": profits["keep_current"] / profits["oracle"],
        "naive_argmax_fraction": profits["naive_argmax"] / profits["oracle"],
        "violations": sum(violations.values()),
        "interval_coverage": _share(covered, known),
        "moved_interval_coverage": _share(covered, known & moved),
        "suggestions": len(result.suggestions),
        "skipped": len(result.skipped),
        **{f"{name}_profit": value for name, value in profits.items()},
        "violations_by_rule": violations,
        "offers": len(offers),
        "oracle_skipped": len(oracle.skipped),
        "day": day,
        "period": period,
        "rules": rules,
        "validation": fitted.metrics,
        "best_iteration": fitted.model.best_iteration,
        "prices": offers[SERIES_KEYS].assign(
            current_price=strategies["keep_current"],
            suggested_price=strategies["suggestions"],
            naive_argmax_price=strategies["naive_argmax"],
            oracle_price=strategies["oracle"],
        ),
    }


SWEEP_COLUMNS = ("family", "seed", "uplift_capture", "moved", "moved_losing_share",
                 "oracle_fraction", "keep_current_fraction", "violations", "suggestions",
                 "skipped", "suggestions_profit", "keep_current_profit", "oracle_profit",
                 "interval_coverage", "moved_interval_coverage")
RULE_COLUMNS = ("confidence_percent", "uplift_capture", "moved", "moved_losing_share",
                "gain_over_keep", "violations")


def evaluate_families(
    families: Sequence[str], seeds: Sequence[int], workdir: Path, days: int = 365,
    users: int = 2000, items: int = 200, guardrails: Guardrails | None = None,
    period: Period = "W", progress: Callable[[], None] | None = None,
    rule_confidences: Sequence[float] = (),
) -> list[dict]:
    """`evaluate_pricing` on a simulated market of every family x seed (written under
    `workdir`, reused when already there): one row per market with `SWEEP_COLUMNS`, and
    its `rules` when `rule_confidences` are given."""
    rows = []
    for family in families:
        for seed in seeds:
            folder = Path(workdir) / f"{family}-{seed}-{days}d-{items}i-{users}u"
            if not (folder / "ground_truth.parquet").is_file():
                write_simulation(simulate_market(days, users, items, seed, family=family),
                                 folder)
            report = evaluate_pricing(folder, guardrails, period, rule_confidences)
            rows.append({"seed": seed, **{key: report[key] for key in SWEEP_COLUMNS
                                          if key != "seed"},
                         **({"rules": report["rules"]} if rule_confidences else {})})
            if progress is not None:
                progress()
    return rows


def family_summary(rows: list[dict]) -> list[dict]:
    """Per family: mean uplift capture, the worst seed's profit over keeping current prices,
    the largest share of moved offers that lost profit, and the violations."""
    frame = pd.DataFrame(rows)
    frame["gain_over_keep"] = frame["suggestions_profit"] - frame["keep_current_profit"]
    summary = frame.groupby("family", sort=False).agg(
        seeds=("seed", "count"), mean_uplift_capture=("uplift_capture", "mean"),
        worst_gain_over_keep=("gain_over_keep", "min"),
        max_moved_losing_share=("moved_losing_share", "max"), violations=("violations", "sum"))
    return summary.reset_index().to_dict("records")


def rule_summary(rows: list[dict]) -> list[dict]:
    """Per family and confidence of the decision rule (the markets' `rules`): the mean uplift
    capture, the worst seed's profit over keeping current prices, the largest share of moved
    offers that lost profit, and the violations."""
    frame = pd.DataFrame([{"family": row["family"], "seed": row["seed"], **rule}
                          for row in rows for rule in row["rules"]])
    summary = frame.groupby(["family", "confidence_percent"], sort=False).agg(
        seeds=("seed", "count"), mean_uplift_capture=("uplift_capture", "mean"),
        worst_gain_over_keep=("gain_over_keep", "min"),
        max_moved_losing_share=("moved_losing_share", "max"), violations=("violations", "sum"))
    return summary.reset_index().to_dict("records")


def _profit_over_days(market: SimulatedMarket, first_day: int) -> float:
    """The true expected profit of every item x channel from `first_day` on, at its prices."""
    prices = market.prices[market.prices["day"] >= first_day].pivot(
        index=SERIES_KEYS, columns="day", values="price")
    truth = market.truth.set_index(SERIES_KEYS).loc[prices.index].reset_index()
    return float(np.sum(_true_profit(truth, prices.to_numpy(),
                                     prices.columns.to_numpy()[None, :])))


def _tested_gains(market: SimulatedMarket, report: dict, tested: pd.MultiIndex) -> dict:
    """The true daily profit gain over their current prices of the tested offers, at the
    report's suggestions and at the oracle's."""
    prices = report["prices"]
    on_tests = prices[pd.MultiIndex.from_frame(prices[SERIES_KEYS]).isin(tested)]
    truth = market.truth.set_index(SERIES_KEYS).loc[
        pd.MultiIndex.from_frame(on_tests[SERIES_KEYS])].reset_index()
    keep = _true_profit(truth, on_tests["current_price"].to_numpy(), report["day"])
    return {f"tested_{name}_gain": float(np.sum(
        _true_profit(truth, on_tests[f"{name}_price"].to_numpy(), report["day"]) - keep))
        for name in ("suggested", "oracle")}


def evaluate_price_tests(
    market: SimulatedMarket, workdir: Path, users: int, guardrails: Guardrails | None = None,
    period: Period = "W", test_days: int = 28, days: int = 56, horizon_days: int = 182,
    seed: int = 0, max_tests: int | None = None,
) -> dict:
    """Play a programme of price tests forward on a simulated market and score what it buys.

    The model fitted on `market`'s history plans its tests (`plan_price_tests`, at most
    `max_tests`); the market then runs `days` more days twice from the same `seed`
    (`continue_market`): the "keep" arm at its current prices, the "test" arm with each
    planned test price for its first `test_days` days and the current price after. Each arm's
    history is then priced and scored by `evaluate_pricing` (as of its last day).

    Returned: the number of tests, their planned expected profit change over the tests
    (-expected_cost) and value; each arm's scores (`RULE_COLUMNS` but the confidence) with the
    tested offers' true daily gain over their current prices at the suggestions and at the
    oracle (`tested_suggested_gain`, `tested_oracle_gain`: what the tests' evidence did where
    it was gathered, apart from how a refit on other data moves every decision a little);
    `test_period_gain`, the test arm's true expected profit over the `days` less the keep
    arm's (negative when the tests cost); and `net_gain` = test_period_gain + `horizon_days` x
    (the test arm's daily gain over keeping its prices less the keep arm's).
    """
    guardrails = guardrails or Guardrails()
    workdir = Path(workdir)
    write_simulation(market, workdir / "history")
    history = read_simulation(workdir / "history")
    as_of = default_as_of(history.events)
    fitted = fit_demand(history.events, history.catalog, period, end=as_of)
    offers = build_offers(history.events, history.catalog, history.channels, as_of, period,
                          history.channel_prices, fitted.model)
    result = optimize_prices(offers, demand_curves(fitted.model, offers,
                                                   guardrails.confidence_percent),
                             guardrails, "evaluation")
    tests = plan_price_tests(fitted.model, offers, result.suggestions, guardrails, period,
                             test_days, horizon_days, max_tests)
    plan = tests[[*SERIES_KEYS, "test_price"]].rename(columns={"test_price": "price"}).merge(
        pd.DataFrame({"day": range(min(test_days, days))}), how="cross")
    first_day = int(market.prices["day"].max()) + 1
    tested = pd.MultiIndex.from_frame(tests[SERIES_KEYS])
    arms, profit = {}, {}
    for arm, price_plan in (("keep", None), ("test", plan)):
        continued = continue_market(market, days, seed, users, price_plan)
        write_simulation(continued, workdir / arm)
        report = evaluate_pricing(workdir / arm, guardrails, period)
        arms[arm] = {key: report[key] for key in RULE_COLUMNS if key != "confidence_percent"}
        arms[arm].update(_tested_gains(market, report, tested))
        profit[arm] = _profit_over_days(continued, first_day)
    test_period_gain = profit["test"] - profit["keep"]
    return {
        "tests": len(tests),
        "planned_test_period_gain": -float(tests["expected_cost"].sum()),
        "planned_value": float(tests["expected_value"].sum()),
        "arms": arms,
        "test_period_gain": test_period_gain,
        "net_gain": test_period_gain + horizon_days * (arms["test"]["gain_over_keep"]
                                                       - arms["keep"]["gain_over_keep"]),
    }
