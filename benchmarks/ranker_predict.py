"""Per-request predict time of the recommendations ranker: LightGBM against compiled trees.

Trains the ranker as `make run` does (the whole shared export imported and built, default
parameters, 3 monthly cutoffs) in a temporary directory, and takes as requests the
validation cutoff's users whose candidate lists are closest to 300 rows (their real
`feature_matrix` rows, NaN where a source or feature has no value). Measured in the same
run, alternating request by request: the booster's `predict(features, num_threads=1)` (what
serving called) and `models.recs.compiled` (lleaves), plus the compile and cached-load
times and the largest score difference over every validation row.

Writes `benchmarks/results/ranker_predict.json` and `.md`.
Run from the repository root: python -m benchmarks.ranker_predict [--requests 60]
[--rounds 30] [--cutoffs 3] [--csv PATH]
"""

import argparse
import gc
import json
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from benchmarks.common import ONLINE_RETAIL_CSV, RESULTS_DIR, provenance, summary
from features.event_log import EventLog
from features.ingest import import_online_retail, read_catalog
from features.settings import Settings
from features.store import apply_definitions, feature_store
from features.transforms import build_feature_tables
from models.recs.compiled import compile_booster
from models.recs.ranker import FEATURE_COLUMNS
from training.recs.examples import train_ranker

RESULTS = RESULTS_DIR / "ranker_predict.json"
MARKDOWN = RESULTS.with_suffix(".md")
TARGET_ROWS = 300
console = Console()


def train(csv: Path, data_dir: Path, cutoffs: int):
    """The served ranker's booster and the validation cutoff's examples."""
    import_online_retail(csv, data_dir)
    settings = Settings(data_dir=data_dir, feast_project=f"bench_{uuid.uuid4().hex[:8]}")
    catalog = read_catalog(settings.catalog_path)
    build_feature_tables(settings.events_dir, catalog, settings.feature_tables_dir)
    store = feature_store(settings)
    apply_definitions(store)
    events = EventLog(settings.events_dir).read()
    ranker, examples = train_ranker(events, catalog, store, events["ts"].max().ceil("D"),
                                    cutoffs)
    return ranker, examples[-1].frame


def requests_of(frame: pd.DataFrame, n: int) -> list[np.ndarray]:
    """The `n` queries whose sizes are closest to `TARGET_ROWS`, as feature matrices."""
    sizes = frame.groupby("query").size()
    chosen = (sizes - TARGET_ROWS).abs().sort_values(kind="stable").index[:n]
    return [np.ascontiguousarray(group[list(FEATURE_COLUMNS)].to_numpy(dtype=float))
            for _, group in frame[frame["query"].isin(chosen)].groupby("query")]


def measure(predictors: dict, requests: list[np.ndarray], rounds: int) -> dict[str, dict]:
    """Each predictor on every request, alternating, `rounds` times (collector paused)."""
    seconds: dict[str, list[float]] = {name: [] for name in predictors}
    for features in requests[:5]:  # warm-up
        for predict in predictors.values():
            predict(features)
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            for features in requests:
                for name, predict in predictors.items():
                    start = time.perf_counter()
                    predict(features)
                    seconds[name].append(time.perf_counter() - start)
    finally:
        gc.enable()
    return {name: summary(values) for name, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--cutoffs", type=int, default=3)
    parser.add_argument("--csv", type=Path, default=ONLINE_RETAIL_CSV)
    args = parser.parse_args()
    head = provenance()
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        console.print(f"training the ranker on {args.csv.name} ({args.cutoffs} cutoffs)")
        ranker, valid = train(args.csv, Path(workdir) / "data", args.cutoffs)
        train_s = time.perf_counter() - start
        booster = ranker.model
        cache = Path(workdir) / "compiled"
        start = time.perf_counter()
        compiled = compile_booster(booster, cache)
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        compiled = compile_booster(booster, cache)
        cached_load_s = time.perf_counter() - start

    every_row = np.ascontiguousarray(valid[list(FEATURE_COLUMNS)].to_numpy(dtype=float))
    gap = float(np.max(np.abs(compiled.predict(every_row)
                              - booster.predict(every_row, num_threads=1))))
    requests = requests_of(valid, args.requests)
    rows = [len(features) for features in requests]
    predictors = {"lightgbm": lambda features: booster.predict(features, num_threads=1),
                  "compiled (lleaves)": compiled.predict}
    results = measure(predictors, requests, args.rounds)
    base, fast = results["lightgbm"], results["compiled (lleaves)"]
    speedup = {"p50": base["p50_ms"] / fast["p50_ms"], "p99": base["p99_ms"] / fast["p99_ms"]}
    record = {
        "benchmark": "ranker_predict", **head,
        "parameters": vars(args) | {"csv": str(args.csv)},
        "model": {"trees": booster.num_trees(), "features": booster.num_feature(),
                  "ranker_trees": ranker.best_iteration,
                  "classifier_trees": ranker.classifier_best_iteration},
        "rows_per_request": {"median": float(np.median(rows)), "min": min(rows),
                             "max": max(rows), "requests": len(rows)},
        "validation_rows": len(every_row),
        "nan_share": float(np.isnan(every_row).mean()),
        "max_abs_score_difference": gap,
        "setup_s": {"train": train_s, "compile": compile_s, "cached_load": cached_load_s},
        "results": results, "speedup": speedup,
    }
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    MARKDOWN.write_text("\n".join(markdown(record)) + "\n")

    table = Table(title="Ranker predict per request (ms)")
    for column in ("predictor", "p50", "p90", "p99", "mean", "req/s"):
        table.add_column(column, justify="left" if column == "predictor" else "right")
    for name, row in results.items():
        table.add_row(name, *(f"{row[k]:.3f}" for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")),
                      f"{row['per_second']:.0f}")
    console.print(table)
    console.print("\n".join(markdown(record)[-3:]))


def markdown(record: dict) -> list[str]:
    rows, model, setup = record["rows_per_request"], record["model"], record["setup_s"]
    lines = [f"Ranker: {model['trees']} trees ({model['ranker_trees']} LambdaRank + "
             f"{model['classifier_trees']} classifier), {model['features']} features. Requests: "
             f"{rows['requests']} validation users, median {rows['median']:.0f} rows "
             f"(min {rows['min']}, max {rows['max']}), {record['parameters']['rounds']} rounds, "
             "alternating, one thread, collector paused; load average before the run "
             f"{record['machine']['load_average'][0]:.1f}.", "",
             "| predictor | p50 ms | p90 ms | p99 ms | mean ms | req/s |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {name} | {row['p50_ms']:.3f} | {row['p90_ms']:.3f} | {row['p99_ms']:.3f} | "
              f"{row['mean_ms']:.3f} | {row['per_second']:.0f} |"
              for name, row in record["results"].items()]
    lines += ["", f"Compiled / LightGBM: {record['speedup']['p50']:.1f}x faster at p50, "
              f"{record['speedup']['p99']:.1f}x at p99.",
              f"Largest score difference over all {record['validation_rows']} validation rows "
              f"({record['nan_share']:.0%} of the cells NaN): "
              f"{record['max_abs_score_difference']:.2g}.",
              f"Compile {setup['compile']:.1f} s (once per model and machine, cached); "
              f"loading the cached object {setup['cached_load'] * 1000:.0f} ms."]
    return lines


if __name__ == "__main__":
    main()
