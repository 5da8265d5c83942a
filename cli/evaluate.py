"""`tailor evaluate`: score a model against baselines offline on a time split (nothing is
registered or stored)."""

import json
import tempfile
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from cli import inputs
from cli.inputs import CatalogOption, EventsOption, JsonFlag, PeriodOption, SplitOption
from cli.output import demand_table, fail, metrics_table, out, records_table, table
from features.errors import InputError
from features.event_log import EventLog
from features.progress import stages
from features.simulator import DEMAND_FAMILIES
from training.pricing.evaluate import (
    RULE_COLUMNS,
    SWEEP_COLUMNS,
    evaluate_families,
    evaluate_pricing,
    family_summary,
    rule_summary,
)
from training.pricing.evaluate_demand import evaluate_demand
from training.recs.evaluate import evaluate_recs

RECS_COLUMNS = ("ndcg@10", "recall@20", "hr@10", "coverage", "novel_ndcg@10", "novel_recall@20")
RECS_WINDOW = pd.Timedelta(days=30)

app = typer.Typer(help="Score a model against baselines offline on a time split (nothing is "
                       "registered or stored).", no_args_is_help=True)


@app.command("recs")
def evaluate_recs_command(
    split_date: SplitOption,
    until: Annotated[datetime | None, typer.Option(
        help="End of scoring (UTC, exclusive); default: the split + 30 days")] = None,
    events: EventsOption = None,
    catalog: CatalogOption = None,
    cutoffs: Annotated[int, typer.Option(min=2, help="Monthly training cutoffs")] = 3,
    extra_seeds: Annotated[list[int] | None, typer.Option(
        "--extra-seed", help="Also refit the ranker with this seed (repeatable): seed noise")]
    = None,
    as_json: JsonFlag = False,
) -> None:
    """Score the recommendations ranker against baselines after a split.

    Both are fitted on events before the split and scored on the purchases after it.
    """
    log, catalog_file = inputs.events_and_catalog(events, catalog)
    split, end = inputs.time_split(log, split_date, until)
    end = end if end is not None else split + RECS_WINDOW
    items = inputs.read_catalog_file(catalog_file)
    with stages(["reading events", "building features", "training the ranker",
                 "scoring candidates", "scoring baselines"]) as done:
        history = EventLog(log.path).read(end=end)
        done()
        result = evaluate_recs(history, items, split, end, cutoffs, tuple(extra_seeds or ()),
                               step=done)
    if as_json:
        print(json.dumps(result))
        return
    out.print(metrics_table(f"Recommendations, {result['split']} to {result['until']} "
                            f"({result['rows'][0]['users']} users)",
                            {row["name"]: row for row in result["rows"]}, RECS_COLUMNS))
    out.print(f"candidate recall {result['candidate_recall']:.3f} with "
              f"{result['candidates_per_user']:.0f} candidates per user")
    if extra_seeds:
        out.print("ranker NDCG@10 by seed: " + ", ".join(
            f"{run['seed']}: {run['ndcg@10']:.4f}" for run in result["seed_runs"]))


@app.command("demand")
def evaluate_demand_command(
    split_date: SplitOption,
    until: Annotated[datetime | None, typer.Option(
        help="End of scoring (UTC, exclusive); default: the end of the log")] = None,
    events: EventsOption = None,
    period: PeriodOption = "W",
    as_json: JsonFlag = False,
) -> None:
    """Score the demand model against naive forecasts after a split.

    Units per item x channel x period; baselines: last period and 4-period mean (WAPE, MAE).
    """
    log = inputs.event_log(events)
    split, end = inputs.time_split(log, split_date, until)
    with stages(["reading events", "training and scoring"]) as done:
        history = EventLog(log.path).read()
        done()
        try:
            result = evaluate_demand(history, split, period=period, until=end)
        except InputError as error:
            fail(f"--split-date {split:%Y-%m-%d} with --period {period}: {error} "
                 f"({log.span})")
        done()
    rows = [{"name": r["name"], "wape": r["wape"], "mae": r["mae"]} for r in result["rows"]]
    if as_json:
        print(json.dumps({"rows": rows, "counts": result["counts"]}))
        return
    out.print(demand_table(f"Demand per item x channel x {'week' if period == 'W' else 'day'} "
                           f"from {split:%Y-%m-%d}", {row["name"]: row for row in rows}))


@app.command("pricing")
def evaluate_pricing_command(
    sim: Annotated[Path | None, typer.Option(
        "--sim", exists=True, file_okay=False,
        help="A market written by `tailor data simulate`; default: simulate every --family "
             "x --seed")] = None,
    families: Annotated[list[str] | None, typer.Option(
        "--family", help=f"Demand family to simulate (repeatable): "
                         f"{', '.join(DEMAND_FAMILIES)}; default: all")] = None,
    seeds: Annotated[list[int] | None, typer.Option(
        "--seed", min=0, help="Simulation seed (repeatable); default: 1 2 3")] = None,
    days: Annotated[int, typer.Option(min=30, help="Days of each simulated market")] = 365,
    items: Annotated[int, typer.Option(min=1, help="Items of each simulated market")] = 200,
    users: Annotated[int, typer.Option(min=1, help="Users of each simulated market")] = 2000,
    work_dir: Annotated[Path | None, typer.Option(
        "--work-dir", file_okay=False,
        help="Where simulated markets are written and reused; default: a temporary folder")]
    = None,
    period: PeriodOption = "W",
    rule_confidences: Annotated[list[float] | None, typer.Option(
        "--rule-confidence", min=0, max=99.9,
        help="Also score the decision rule at this confidence (percent, repeatable) on the "
             "same fits: what moving on less or more certainty gains and loses")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Score price suggestions on simulated markets against their hidden truth.

    Uplift capture = (suggested - keep) / (oracle - keep) profit, the oracle being the true
    optimum under the same guardrails; also the share of moved offers whose profit fell.
    """
    confidences = rule_confidences or []
    if sim is not None:
        if families or seeds:
            fail("--sim scores one market; --family and --seed simulate others: pass either")
        inputs.simulated_market(sim)
        with stages(["training, suggesting and scoring"]) as done:
            result = evaluate_pricing(sim, period=period, rule_confidences=confidences)
            done()
        summary = {key: result[key] for key in SWEEP_COLUMNS if key in result}
        if as_json:
            print(json.dumps(summary | ({"rules": result["rules"]} if confidences else {})))
            return
        out.print(table(f"Pricing against the simulator's truth ({sim})", {
            key: f"{value:.4f}" if isinstance(value, float) else value
            for key, value in summary.items()}))
        if confidences:
            out.print(records_table("Per confidence of the decision rule", result["rules"],
                                    RULE_COLUMNS))
        return
    unknown = sorted(set(families or []) - set(DEMAND_FAMILIES))
    if unknown:
        fail(f"--family must be one of {', '.join(DEMAND_FAMILIES)}, got {', '.join(unknown)}")
    families = families or list(DEMAND_FAMILIES)
    seeds = seeds or [1, 2, 3]
    with ExitStack() as stack:
        folder = work_dir or Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="tailor-evaluate-pricing-")))
        names = [f"{family} seed {seed}" for family in families for seed in seeds]
        with stages(names) as done:
            rows = evaluate_families(families, seeds, folder, days, users, items,
                                     period=period, progress=done,
                                     rule_confidences=confidences)
    per_family = family_summary(rows)
    per_rule = rule_summary(rows) if confidences else []
    if as_json:
        print(json.dumps({"markets": rows, "families": per_family}
                         | ({"rules": per_rule} if confidences else {})))
        return
    out.print(records_table("Pricing per simulated market", rows, SWEEP_COLUMNS[:10]))
    out.print(records_table("Per family", per_family, tuple(per_family[0])))
    if per_rule:
        out.print(records_table("Per family and confidence of the decision rule", per_rule,
                                tuple(per_rule[0])))
