"""Recommendation quality: the ranker against its baselines on two time splits.

For each split, the offline evaluation (`tailor evaluate recs`) on the whole shared export:
everything fitted before the split, purchases of the following 30 days scored. Baselines, in
the same run: every other row of the evaluation (popularity, repurchase heuristic, ALS,
item-kNN), and the ranker refitted with other seeds (the seed noise). Targets: the ranker's
NDCG@10 at least 1.15 x the best other row's, its novel-item NDCG@10 at least theirs.

Writes `benchmarks/results/recs_quality.json` and `.md`.
Run from the repository root: python -m benchmarks.recs_quality
[--splits 2011-09-01 2011-08-01] [--extra-seeds 7 123] [--csv PATH]
"""

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from benchmarks.common import ONLINE_RETAIL_CSV, RESULTS_DIR, ROOT, provenance
from features.event_log import EventLog
from features.ingest import import_online_retail, read_catalog
from training.recs.evaluate import evaluate_recs

RESULTS = RESULTS_DIR / "recs_quality.json"
NDCG_FACTOR_TARGET = 1.15
COLUMNS = ("ndcg@10", "recall@20", "hr@10", "coverage", "novel_ndcg@10", "novel_recall@20")
console = Console()


def targets(rows: list[dict]) -> dict:
    """The ranker's NDCG@10 ratio to the best other row, and whether both targets hold."""
    ranker = rows[0]
    others = rows[1:]
    best = max(others, key=lambda r: r["ndcg@10"])
    best_novel = max(others, key=lambda r: r["novel_ndcg@10"])
    ratio = ranker["ndcg@10"] / best["ndcg@10"]
    return {"best_other": best["name"], "ndcg_ratio": ratio,
            "ndcg_target_met": ratio >= NDCG_FACTOR_TARGET,
            "best_other_novel": best_novel["name"],
            "novel_target_met": ranker["novel_ndcg@10"] >= best_novel["novel_ndcg@10"]}


def seed_summary(result: dict) -> dict:
    """Mean and standard deviation of the ranker's NDCG@10 over its seed runs, and the mean's
    ratio to the best other row: what to expect of a retrain, beside the one model shipped."""
    scores = [run["ndcg@10"] for run in result["seed_runs"]]
    best = max(row["ndcg@10"] for row in result["rows"][1:])
    mean = statistics.fmean(scores)
    return {"mean": mean, "sd": statistics.stdev(scores) if len(scores) > 1 else 0.0,
            "mean_ratio": mean / best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=ONLINE_RETAIL_CSV)
    parser.add_argument("--splits", nargs="+", default=["2011-09-01", "2011-08-01"])
    parser.add_argument("--extra-seeds", nargs="*", type=int, default=[7, 123],
                        help="Ranker seeds refitted beside the default one, to show seed noise")
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory(prefix="tailor-recs-bench-") as workdir:
        import_online_retail(args.csv, Path(workdir))
        events = EventLog(Path(workdir) / "events").read()
        catalog = read_catalog(Path(workdir) / "catalog.parquet")
        for split in args.splits:
            start = pd.Timestamp(split, tz="UTC")
            result = evaluate_recs(events, catalog, start, start + pd.Timedelta(days=30),
                                   extra_seeds=tuple(args.extra_seeds))
            result["targets"] = targets(result["rows"])
            result["seeds"] = seed_summary(result)
            results.append(result)

    lines = []
    for result in results:
        table = Table(title=f"Split {result['split']} to {result['until']}, "
                            f"{result['rows'][0]['users']} users")
        table.add_column("method")
        for column in COLUMNS:
            table.add_column(column, justify="right")
        lines += [f"Split {result['split']} to {result['until']} "
                  f"({result['rows'][0]['users']} users):", "",
                  "| method | " + " | ".join(COLUMNS) + " |",
                  "|---|" + "---:|" * len(COLUMNS)]
        for row in result["rows"]:
            cells = [f"{row[c]:.4f}" for c in COLUMNS]
            table.add_row(row["name"], *cells)
            lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
        console.print(table)
        goal = result["targets"]
        summary = (f"ranker / best other ({goal['best_other']}) NDCG@10 = "
                   f"{goal['ndcg_ratio']:.3f} (target {NDCG_FACTOR_TARGET}: "
                   f"{'met' if goal['ndcg_target_met'] else 'MISSED'}); novel NDCG@10 vs "
                   f"{goal['best_other_novel']}: "
                   f"{'met' if goal['novel_target_met'] else 'MISSED'}; candidate recall "
                   f"{result['candidate_recall']:.3f}")
        runs = result["seed_runs"]
        noise = (f"ranker NDCG@10 over seeds {', '.join(str(r['seed']) for r in runs)}: "
                 + " / ".join(f"{r['ndcg@10']:.4f}" for r in runs)
                 + f"; mean {result['seeds']['mean']:.4f} (sd {result['seeds']['sd']:.4f}), "
                 f"mean / best other = {result['seeds']['mean_ratio']:.3f}")
        console.print(summary)
        console.print(noise)
        lines += ["", summary, "", noise, ""]

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"benchmark": "recs_quality", **provenance(),
                                   "results": results}, indent=2))
    RESULTS.with_suffix(".md").write_text("\n".join(lines))
    console.print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
