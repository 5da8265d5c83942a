"""`tailor`: the command line. One group per pipeline stage, in the order they run:
`data` -> `features` -> `train` -> `serve`, with `evaluate` (offline scores) and `pricing`
(suggestions for review) beside them. Wiring only: the work is done by the packages below."""

import os
from typing import Annotated

import typer
from pydantic import ValidationError

from cli import channels, data, evaluate, events, features, keys, pricing, report, train
from cli.output import fail
from serving.config import ServingSettings

app = typer.Typer(
    help="tailor: recommendations and price suggestions for pattern shops. Stages in order: "
         "data -> features -> train -> serve; evaluate scores models offline; pricing "
         "suggests prices for review.",
    no_args_is_help=True)
SERVICE = "Service"
PIPELINE = "Pipeline (in this order)"
BESIDE = "Offline evaluation and price review"
app.add_typer(data.app, name="data", rich_help_panel=PIPELINE)
app.add_typer(features.app, name="features", rich_help_panel=PIPELINE)
app.add_typer(train.app, name="train", rich_help_panel=PIPELINE)
app.add_typer(evaluate.app, name="evaluate", rich_help_panel=BESIDE)
app.add_typer(pricing.app, name="pricing", rich_help_panel=BESIDE)
app.add_typer(report.app, name="report", rich_help_panel=BESIDE)
app.add_typer(keys.app, name="keys", rich_help_panel=SERVICE)
app.add_typer(events.app, name="events", rich_help_panel=SERVICE)
app.add_typer(channels.app, name="channels", rich_help_panel=SERVICE)


@app.command("serve", rich_help_panel=SERVICE)
def serve_command(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(min=1)] = 1,
    clock: Annotated[str | None, typer.Option(
        metavar="now|model|ISO-TIME",
        help="as_of of recency features: now, model (the champion's cutoff; for replayed "
             "data such as the demo) or an ISO time; default TAILOR_SERVING_CLOCK or now")]
    = None,
) -> None:
    """Serve the recommendations and price suggestions API (FastAPI, uvicorn).

    Recommendations come from the champion ranker, prices from the stored suggestions.
    """
    if clock is not None:
        try:
            ServingSettings.model_validate({"clock": clock})
        except ValidationError:
            fail(f"--clock must be now, model or an ISO time such as 2011-12-09T12:00, "
                 f"got {clock!r}")
        os.environ["TAILOR_SERVING_CLOCK"] = clock  # read by every worker at start-up
    from serving.app import run

    run(host=host, port=port, workers=workers)
