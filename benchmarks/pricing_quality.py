"""Pricing quality on simulated markets, and demand-model quality on real data.

Pricing, per seed and period: `evaluate_pricing` on a simulated market with the default
guardrails; the expected true profit of the suggestions as a fraction of the oracle's (the
optimizer on the true demand under the same guardrails). Baselines, in the same run: keeping
the current prices and the model's unconstrained argmax. Target: oracle fraction >= 0.95 and
>= keeping current prices, no guardrail violation. Weekly ("W") is the pipeline's period;
daily ("D") rows are for comparison.

Demand: `evaluate_demand` (weekly) on the whole shared export at each split; WAPE and MAE of
the model beside the `last_week` and `mean_4w` baselines.

Writes `benchmarks/results/pricing_quality.json` and `.md`.
Run from the repository root: python -m benchmarks.pricing_quality [--seeds 1 2 3]
[--periods W D] [--splits 2011-08-01 2011-07-01] [--csv PATH]
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import get_args

from rich.console import Console
from rich.table import Table

from benchmarks.common import ONLINE_RETAIL_CSV, RESULTS_DIR, ROOT, provenance
from features.event_log import EventLog
from features.ingest import import_online_retail, read_catalog
from features.simulator import simulate_market, write_simulation
from models.pricing.demand import Period
from training.pricing.evaluate import evaluate_pricing
from training.pricing.evaluate_demand import evaluate_demand

RESULTS = RESULTS_DIR / "pricing_quality.json"
MARKDOWN = RESULTS.with_suffix(".md")
DAYS, USERS, ITEMS = 365, 2000, 200
ORACLE_FRACTION_TARGET = 0.95
PRICING_COLUMNS = ("oracle_fraction", "keep_current_fraction", "naive_argmax_fraction",
                   "violations", "suggestions", "skipped")
console = Console(width=None if sys.stdout.isatty() else 130)


def pricing_row(seed: int, period: Period, workdir: Path) -> dict:
    folder = workdir / f"seed-{seed}"
    if not folder.exists():
        write_simulation(simulate_market(DAYS, USERS, ITEMS, seed), folder)
    started = time.perf_counter()
    report = evaluate_pricing(folder, period=period)
    report.pop("prices")
    met = (report["oracle_fraction"] >= ORACLE_FRACTION_TARGET
           and report["oracle_fraction"] >= report["keep_current_fraction"]
           and report["violations"] == 0)
    return {"seed": seed, **report, "target_met": met,
            "seconds": round(time.perf_counter() - started, 1)}


def demand_rows(csv: Path, splits: list[str]) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory(prefix="tailor-pricing-bench-") as workdir:
        import_online_retail(csv, Path(workdir))
        events = EventLog(Path(workdir) / "events").read()
        catalog = read_catalog(Path(workdir) / "catalog.parquet")
        for split in splits:
            started = time.perf_counter()
            result = evaluate_demand(events, split, "W", catalog=catalog)
            result["seconds"] = round(time.perf_counter() - started, 1)
            results.append(result)
    return results


def _cell(row: dict, column: str) -> str:
    value = row[column]
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def pricing_tables(rows: list[dict]) -> list[str]:
    title = (f"Pricing on simulated markets ({DAYS} days, {USERS} users, {ITEMS} items, "
             f"3 channels; default guardrails)")
    header = ("seed", "period", *PRICING_COLUMNS, "target")
    table = Table(title=title)
    for name in header:
        table.add_column(name, justify="left" if name in ("period", "target") else "right")
    lines = [title + ":", "", "| " + " | ".join(header) + " |",
             "|---:|---|" + "---:|" * len(PRICING_COLUMNS) + "---|"]
    for row in rows:
        cells = [str(row["seed"]), row["period"], *(_cell(row, c) for c in PRICING_COLUMNS),
                 "met" if row["target_met"] else "MISSED"]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    console.print(table)
    target = (f"Target: oracle_fraction >= {ORACLE_FRACTION_TARGET} and >= "
              "keep_current_fraction, violations 0.")
    console.print(target)
    return [*lines, "", target, ""]


def demand_tables(results: list[dict]) -> list[str]:
    lines = []
    for result in results:
        counts = result["counts"]
        title = (f"Online Retail demand, weekly, split {result['split'][:10]} "
                 f"({counts['series']} series, {counts['test_periods']} test weeks, "
                 f"{counts['rows']} rows)")
        table = Table(title=title)
        for name in ("method", "wape", "mae"):
            table.add_column(name, justify="left" if name == "method" else "right")
        lines += [title + ":", "", "| method | wape | mae |", "|---|---:|---:|"]
        for row in result["rows"]:
            cells = [row["name"], f"{row['wape']:.4f}", f"{row['mae']:.4f}"]
            table.add_row(*cells)
            lines.append("| " + " | ".join(cells) + " |")
        console.print(table)
        lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--periods", nargs="+", choices=get_args(Period),
                        default=list(get_args(Period)))
    parser.add_argument("--csv", type=Path, default=ONLINE_RETAIL_CSV)
    parser.add_argument("--splits", nargs="+", default=["2011-08-01", "2011-07-01"])
    args = parser.parse_args()
    if not args.csv.is_file():
        parser.error(f"the Online Retail export is missing at {args.csv} (pass --csv PATH)")

    pricing = []
    with tempfile.TemporaryDirectory(prefix="tailor-pricing-sim-") as workdir:
        for seed in args.seeds:
            for period in args.periods:
                pricing.append(pricing_row(seed, period, Path(workdir)))
    lines = pricing_tables(pricing)
    demand = demand_rows(args.csv, args.splits)
    lines += demand_tables(demand)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "pricing_quality", **provenance(),
        "simulation": {"days": DAYS, "users": USERS, "items": ITEMS},
        "targets": {"oracle_fraction": ORACLE_FRACTION_TARGET,
                    "oracle_fraction_at_least_keep_current": True, "violations": 0},
        "pricing": pricing,
        "demand": demand,
    }, indent=2, default=str))
    MARKDOWN.write_text("\n".join(lines))
    console.print(f"wrote {RESULTS.relative_to(ROOT)} and {MARKDOWN.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
