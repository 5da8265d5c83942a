"""What a programme of price tests buys on simulated markets of every demand family.

The decision rule keeps the prices whose response the history cannot tell (issue #14: on a
year of history it captures less than half of the available gain on most families, and more
information, not a looser rule, is what raises it). `evaluate_price_tests` plays the planned
tests forward against each market's hidden truth: the market (`pricing_quality`'s: 365 days,
2,000 users, 200 items) runs `DAYS` more days twice from the same seed, at its current prices
(keep arm) and with the tests of `plan_price_tests` for their first `TEST_DAYS` days (test
arm), then each arm is priced and scored as `tailor evaluate pricing` scores a market. Printed
per market and per family: tests, each arm's uplift capture and share of moves losing, the
tested offers' true daily gain in each arm beside the oracle's on them (per family: their
capture, the seeds' gains summed), what the tests earned or cost over the days, and the net
gain once the decisions have run `HORIZON_DAYS` (the planner's own horizon). Baseline: the
keep arm, in the same run. The two arms draw the same units wherever their prices agree; their
refits still differ a little on every offer (pooling and the base level see the tests' data),
which the tested offers' own gains leave out.

Writes `benchmarks/results/pricing_tests.json` and `.md`.
Run from the repository root: python -m benchmarks.pricing_tests [--seeds 1 2 3]
[--families F ...]
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from benchmarks.common import RESULTS_DIR, provenance
from features.simulator import DEMAND_FAMILIES, simulate_market
from training.pricing.evaluate import evaluate_price_tests

RESULTS = RESULTS_DIR / "pricing_tests.json"
MARKDOWN = RESULTS.with_suffix(".md")
DAYS, USERS, ITEMS = 365, 2000, 200
TEST_DAYS, FOLLOW_DAYS, HORIZON_DAYS = 28, 56, 182
CONTINUATION_SEED = 1000  # the continuation's own draws, the same in both arms
MARKET_COLUMNS = ("family", "seed", "tests", "keep_capture", "test_capture",
                  "keep_losing_share", "test_losing_share", "tested_keep_gain",
                  "tested_test_gain", "tested_oracle_gain", "planned_test_period_gain",
                  "test_period_gain", "daily_gain_difference", "net_gain")
FAMILY_COLUMNS = ("family", "seeds", "tests", "keep_capture", "test_capture",
                  "worst_test_losing_share", "tested_keep_capture", "tested_test_capture",
                  "test_period_gain", "net_gain", "markets_net_positive")
console = Console(width=None if sys.stdout.isatty() else 170)


def market_row(family: str, seed: int, workdir: Path) -> dict:
    market = simulate_market(DAYS, USERS, ITEMS, seed, family=family)
    report = evaluate_price_tests(market, workdir, USERS, test_days=TEST_DAYS, days=FOLLOW_DAYS,
                                  horizon_days=HORIZON_DAYS, seed=CONTINUATION_SEED + seed)
    keep, test = report["arms"]["keep"], report["arms"]["test"]
    return {
        "family": family, "seed": seed, "tests": report["tests"],
        "keep_capture": keep["uplift_capture"], "test_capture": test["uplift_capture"],
        "keep_losing_share": keep["moved_losing_share"],
        "test_losing_share": test["moved_losing_share"],
        "tested_keep_gain": keep["tested_suggested_gain"],
        "tested_test_gain": test["tested_suggested_gain"],
        "tested_oracle_gain": keep["tested_oracle_gain"],
        "planned_test_period_gain": report["planned_test_period_gain"],
        "test_period_gain": report["test_period_gain"],
        "daily_gain_difference": test["gain_over_keep"] - keep["gain_over_keep"],
        "net_gain": report["net_gain"], "arms": report["arms"],
    }


def family_rows(rows: list[dict]) -> list[dict]:
    frame = pd.DataFrame(rows)
    summary = frame.groupby("family", sort=False).agg(
        seeds=("seed", "count"), tests=("tests", "mean"), keep_capture=("keep_capture", "mean"),
        test_capture=("test_capture", "mean"),
        worst_test_losing_share=("test_losing_share", "max"),
        test_period_gain=("test_period_gain", "mean"), net_gain=("net_gain", "mean"),
        markets_net_positive=("net_gain", lambda gains: int((gains > 0).sum())),
        tested_keep=("tested_keep_gain", "sum"), tested_test=("tested_test_gain", "sum"),
        tested_oracle=("tested_oracle_gain", "sum"))
    summary["tested_keep_capture"] = summary.pop("tested_keep") / summary["tested_oracle"]
    summary["tested_test_capture"] = summary.pop("tested_test") / summary.pop("tested_oracle")
    return summary.reset_index().to_dict("records")


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def render(title: str, rows: list[dict], columns) -> tuple[Table, str]:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="left" if column == "family" else "right")
    lines = [f"| {' | '.join(columns)} |",
             "|" + "|".join("---" if c == "family" else "---:" for c in columns) + "|"]
    for row in rows:
        cells = [_cell(row[column]) for column in columns]
        table.add_row(*cells)
        lines.append(f"| {' | '.join(cells)} |")
    return table, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--families", nargs="+", default=list(DEMAND_FAMILIES),
                        choices=DEMAND_FAMILIES)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tailor-tests-bench-") as workdir, \
            Progress(console=console) as progress:
        task = progress.add_task("markets", total=len(args.families) * len(args.seeds))
        for family in args.families:
            for seed in args.seeds:
                rows.append(market_row(family, seed, Path(workdir) / f"{family}-{seed}"))
                progress.advance(task)
    families = family_rows(rows)
    setting = (f"{DAYS} days of history, {USERS} users, {ITEMS} items, 3 channels; tests of "
               f"{TEST_DAYS} days, both arms scored {FOLLOW_DAYS} days later; net gain over "
               f"{HORIZON_DAYS} days")
    market_table, market_md = render(f"Price tests per market ({setting})", rows, MARKET_COLUMNS)
    family_table, family_md = render("Price tests per family (means over seeds)", families,
                                     FAMILY_COLUMNS)
    console.print(market_table)
    console.print(family_table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "provenance": provenance(), "setting": setting, "markets": rows, "families": families,
    }, indent=2, default=float) + "\n")
    MARKDOWN.write_text(f"Price tests per market ({setting}):\n\n{market_md}\n\n"
                        f"Per family (means over seeds):\n\n{family_md}\n")


if __name__ == "__main__":
    main()
