"""`tailor`: the command line. One group per pipeline stage, in the order they run:
`data` -> `features` -> `train` -> `serve`, with `evaluate` (offline scores) and `pricing`
(suggestions for review) beside them. Wiring only: the work is done by the packages below."""

import os
from typing import Annotated

import typer
from pydantic import ValidationError

from cli import channels, data, evaluate, events, features, keys, pricing, report, train
from cli.output import fail
from serving.config import LogFormat, ServingSettings

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
    workers: Annotated[int, typer.Option(
        min=1, help="Processes, each loading its own model: about one per core")] = 1,
    clock: Annotated[str | None, typer.Option(
        metavar="now|model|ISO-TIME",
        help="as_of of recency features: now, model (the champion's cutoff; for replayed "
             "data such as the demo) or an ISO time; default TAILOR_SERVING_CLOCK or now")]
    = None,
    log_format: Annotated[LogFormat | None, typer.Option(
        help="text, or json (one object per line, with the request id); default "
             "TAILOR_SERVING_LOG_FORMAT or text")] = None,
    timeout_keep_alive: Annotated[int, typer.Option(
        min=1, help="Seconds an idle keep-alive connection stays open; behind a load "
                    "balancer, more than its idle timeout")] = 5,
    timeout_graceful_shutdown: Annotated[int, typer.Option(
        min=0, help="On SIGTERM, seconds requests in flight get to finish")] = 20,
    access_log: Annotated[bool, typer.Option(help="Log every request")] = True,
) -> None:
    """Serve the recommendations and price suggestions API (FastAPI, uvicorn).

    Recommendations come from the champion ranker, prices from the stored suggestions.
    Metrics at /metrics (every worker's), liveness /healthz, readiness /readyz.
    """
    if clock is not None:
        try:
            ServingSettings.model_validate({"clock": clock})
        except ValidationError:
            fail(f"--clock must be now, model or an ISO time such as 2011-12-09T12:00, "
                 f"got {clock!r}")
        os.environ["TAILOR_SERVING_CLOCK"] = clock  # read by every worker at start-up
    from serving.app import run

    run(host=host, port=port, workers=workers,
        log_format=log_format or ServingSettings().log_format,
        timeout_keep_alive=timeout_keep_alive,
        timeout_graceful_shutdown=timeout_graceful_shutdown, access_log=access_log)
