"""`tailor train`: train a model, log it to MLflow, promote it to champion if it is better."""

from typing import Annotated

import typer

from cli import inputs
from cli.features import require_applied, require_built
from cli.inputs import (
    CatalogOption,
    ChannelPricesOption,
    ChannelsOption,
    EventsOption,
    PeriodOption,
)
from cli.output import demand_table, fail, metrics_table, out, print_promotion
from features.errors import InputError
from features.progress import stages
from features.settings import get_settings
from features.store import feature_store
from training.pricing.market import load_market_files
from training.pricing.train import train_pricing
from training.recs.train import stage_labels, train_recs

RECS_COLUMNS = ("ndcg@10", "recall@20", "hr@10", "coverage")

app = typer.Typer(help="Train a model, log it to MLflow, promote it to champion if it is "
                       "better.", no_args_is_help=True)


@app.command("recs")
def train_recs_command(
    cutoffs: Annotated[int, typer.Option(min=2, help="Monthly training cutoffs")] = 3,
) -> None:
    """Train the recommendations ranker on the data directory's event log.

    Promoted if it beats the champion on the same validation month.

    Needs `tailor features build` and `tailor features apply` first.
    """
    settings = get_settings()
    inputs.event_log(None)
    require_built(settings)
    require_applied(settings, feature_store(settings))
    with stages(stage_labels(cutoffs)) as done:
        report = train_recs(settings, cutoffs=cutoffs, on_stage=done)
    out.print(metrics_table(f"recs-ranker version {report.version} (run {report.run_id[:8]})",
                            report.metrics, RECS_COLUMNS))
    print_promotion(report.promoted, report.reason)


@app.command("pricing")
def train_pricing_command(events: EventsOption = None, catalog: CatalogOption = None,
                          channels: ChannelsOption = None,
                          channel_prices: ChannelPricesOption = None,
                          period: PeriodOption = "W") -> None:
    """Train the pricing demand model (`demand-model`) on an event log.

    Promoted if its validation WAPE beats the champion's on the same periods.
    """
    files = inputs.market(events, catalog, channels, channel_prices=channel_prices)
    try:
        market = load_market_files(files.events.path, files.catalog, files.channels,
                                   files.channel_prices)
    except (OSError, InputError) as error:
        fail(str(error))
    with stages(["training and validating"]) as done:
        report = train_pricing(get_settings(), market, period=period)
        done()
    out.print(demand_table(f"{report.model_version} (run {report.run_id[:8]})", report.metrics))
    print_promotion(report.promoted, report.reason)
