"""Pricing quality on simulated markets of every demand family, and demand-model quality on
real data.

Pricing: `evaluate_families` (the code behind `tailor evaluate pricing`) on a simulated market
per demand family x seed, weekly, default guardrails. Each market's suggestions are scored by
the true expected profit beside keeping the current prices and the oracle (the optimizer on
the true demand under the same guardrails): uplift capture = (suggested - keep) / (oracle -
keep), the share of moved offers whose true profit fell, violations, and how often the
elasticity intervals the decisions used (80%, the default guardrails') hold the true
elasticity at the current price, over all offers and over the moved ones. The same fits are
also decided at `RULE_CONFIDENCES` of the decision rule, summarised per family (the trade-off
between capture and losing moves). Targets (issue #14), per family over its seeds: profit at
least keep on every seed, mean uplift capture >= 0.5, at most 15% of moved offers losing,
0 violations.

Demand: `evaluate_demand` (weekly) on the whole shared export at each split; WAPE and MAE of
the model beside the `last_week` and `mean_4w` baselines.

Writes `benchmarks/results/pricing_quality.json` and `.md`.
Run from the repository root: python -m benchmarks.pricing_quality [--seeds 1 2 3]
[--families F ...] [--splits 2011-09-01 2011-08-01 2011-07-01] [--csv PATH]
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.common import ONLINE_RETAIL_CSV, RESULTS_DIR, ROOT, provenance
from features.event_log import EventLog
from features.ingest import import_online_retail, read_catalog
from features.simulator import DEMAND_FAMILIES
from training.pricing.evaluate import evaluate_families, family_summary, rule_summary
from training.pricing.evaluate_demand import evaluate_demand

RESULTS = RESULTS_DIR / "pricing_quality.json"
MARKDOWN = RESULTS.with_suffix(".md")
DAYS, USERS, ITEMS = 365, 2000, 200
RULE_CONFIDENCES = (60.0, 70.0, 80.0, 90.0)  # of the decision rule, scored on the same fits
TARGETS = {"mean_uplift_capture": 0.5, "max_moved_losing_share": 0.15, "violations": 0,
           "worst_gain_over_keep": 0.0}
MARKET_COLUMNS = ("family", "seed", "uplift_capture", "moved", "moved_losing_share",
                  "oracle_fraction", "keep_current_fraction", "violations", "skipped",
                  "interval_coverage", "moved_interval_coverage")
FAMILY_COLUMNS = ("family", "seeds", "mean_uplift_capture", "worst_gain_over_keep",
                  "max_moved_losing_share", "violations", "target")
RULE_TABLE_COLUMNS = ("family", "confidence_percent", *FAMILY_COLUMNS[1:])
console = Console(width=None if sys.stdout.isatty() else 150)


def target_met(row: dict) -> bool:
    return (row["mean_uplift_capture"] >= TARGETS["mean_uplift_capture"]
            and row["max_moved_losing_share"] <= TARGETS["max_moved_losing_share"]
            and row["violations"] == 0 and row["worst_gain_over_keep"] >= 0)


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


def markdown_table(title: str, rows: list[dict], columns: tuple[str, ...]) -> list[str]:
    """Print `rows` as a rich table and return them as Markdown lines."""
    table = Table(title=title)
    for name in columns:
        table.add_column(name, justify="left" if name in ("family", "target") else "right")
    lines = [title + ":", "", "| " + " | ".join(columns) + " |",
             "|" + "|".join("---" if c in ("family", "target") else "---:" for c in columns)
             + "|"]
    for row in rows:
        cells = [_cell(row, column) for column in columns]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    console.print(table)
    return [*lines, ""]


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
    parser.add_argument("--families", nargs="+", choices=DEMAND_FAMILIES,
                        default=list(DEMAND_FAMILIES))
    parser.add_argument("--csv", type=Path, default=ONLINE_RETAIL_CSV)
    parser.add_argument("--splits", nargs="+", default=["2011-09-01", "2011-08-01", "2011-07-01"])
    args = parser.parse_args()
    if not args.csv.is_file():
        parser.error(f"the Online Retail export is missing at {args.csv} (pass --csv PATH)")

    started = time.perf_counter()
    with (tempfile.TemporaryDirectory(prefix="tailor-pricing-sim-") as workdir,
          console.status("simulating and scoring markets")):
        markets = evaluate_families(args.families, args.seeds, Path(workdir), DAYS, USERS, ITEMS,
                                    rule_confidences=RULE_CONFIDENCES)
    families = [{**row, "target": "met" if target_met(row) else "MISSED"}
                for row in family_summary(markets)]
    rules = [{**row, "target": "met" if target_met(row) else "MISSED"}
             for row in rule_summary(markets)]
    pricing_seconds = round(time.perf_counter() - started, 1)
    title = f"simulated markets ({DAYS} days, {USERS} users, {ITEMS} items, 3 channels)"
    lines = markdown_table(f"Pricing per market, {title}", markets, MARKET_COLUMNS)
    lines += markdown_table("Per family", families, FAMILY_COLUMNS)
    lines += markdown_table("Per family and confidence of the decision rule (same fits; the "
                            "default is 80)", rules, RULE_TABLE_COLUMNS)
    target = ("Targets per family: profit >= keeping current prices on every seed "
              "(worst_gain_over_keep >= 0), mean uplift capture >= 0.5, at most 15% of moved "
              "offers losing, 0 violations.")
    console.print(target)
    lines += [target, ""]
    demand = demand_rows(args.csv, args.splits)
    lines += demand_tables(demand)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "pricing_quality", **provenance(),
        "simulation": {"days": DAYS, "users": USERS, "items": ITEMS},
        "targets": TARGETS, "pricing_seconds": pricing_seconds,
        "markets": markets, "families": families, "rules": rules, "demand": demand,
    }, indent=2, default=str))
    MARKDOWN.write_text("\n".join(lines))
    console.print(f"wrote {RESULTS.relative_to(ROOT)} and {MARKDOWN.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
