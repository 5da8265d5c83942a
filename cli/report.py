"""`tailor report`: what shoppers did with what the service answered, read from the data
directory's logs (nothing is trained or stored)."""

import json
from datetime import datetime, timedelta
from typing import Annotated

import typer

from cli.inputs import JsonFlag
from cli.output import fail, out, records_table
from features.errors import InputError
from features.event_log import EventLog
from features.progress import stages
from features.served_log import ServedLog, served_dir
from features.settings import get_settings
from features.timestamps import to_utc
from training.recs.attribution import WINDOW, attribution

DAY = "%Y-%m-%d"

app = typer.Typer(help="Reports on what shoppers did with the service's answers (online "
                       "evaluation).", no_args_is_help=True)


def _group(row: dict) -> str:
    version = f"model {row['model_version']}" if row["model_version"] else "no model"
    return f"{version}, fallback responses" if row["fallback"] else version


def _shown(row: dict, currency: str | None) -> dict[str, str]:
    return {"source": row["source"], "responses": f"{row['responses']:,}",
            "impressions": f"{row['impressions']:,}", "clicks": f"{row['clicks']:,}",
            "click rate": f"{row['click_rate']:.2%}", "purchases": f"{row['purchases']:,}",
            "purchase rate": f"{row['purchase_rate']:.2%}", "units": f"{row['units']:,}",
            f"revenue{f' ({currency})' if currency else ''}": f"{row['revenue']:,.2f}"}


@app.command("recs")
def report_recs_command(
    since: Annotated[datetime, typer.Option(
        formats=[DAY], help="First day of the responses reported (UTC)")],
    until: Annotated[datetime | None, typer.Option(
        formats=[DAY], help="Day the report stops at (UTC, exclusive); default: no end")]
    = None,
    window_days: Annotated[int, typer.Option(
        min=1, help="Days after a response its clicks and purchases are attributed to it")]
    = WINDOW.days,
    as_json: JsonFlag = False,
) -> None:
    """Impressions, clicks and purchases following recommendation responses.

    Per model version x candidate source, fallback responses apart. An event counts when it
    carries the response's request_id and a served item's id and comes within the window
    after the response; events without a request_id are not attributed.
    """
    start, end = to_utc(since), to_utc(until) if until is not None else None
    if end is not None and end <= start:
        fail(f"--until {end:{DAY}} is not after --since {start:{DAY}}")
    settings = get_settings()
    log = ServedLog(served_dir(settings))
    days = log.days()
    if not days:
        fail(f"no recommendation responses are recorded in {log.root}: the service sends "
             "them to the event stream and the stream consumer writes them there")
    window = timedelta(days=window_days)
    with stages(["reading served responses", "reading events", "attributing"]) as done:
        served = log.read(start, end)
        done()
        events = EventLog(settings.events_dir).read(start, None if end is None else end + window)
        done()
        try:
            rows = attribution(served, events, start, end, window)
        except InputError as error:
            fail(str(error))
        done()
    if rows.empty:
        fail(f"--since {start:{DAY}}{f' --until {end:{DAY}}' if end is not None else ''}: "
             f"no responses served then; the served log runs from {days[0]} to {days[-1]}")
    records = rows.to_dict("records")
    currency = records[0]["currency"]
    if as_json:
        print(json.dumps({"since": f"{start:{DAY}}",
                          "until": None if end is None else f"{end:{DAY}}",
                          "window_days": window_days, "currency": currency,
                          "rows": [{k: v for k, v in r.items() if k != "currency"}
                                   for r in records]}))
        return
    period = f"from {start:{DAY}}" + (f" to {end:{DAY}}" if end is not None else "")
    out.print(f"Recommendations served {period}; events attributed within {window_days} days "
              "after their response")
    groups: dict[str, list[dict[str, str]]] = {}
    for record in records:
        groups.setdefault(_group(record), []).append(_shown(record, currency))
    for title, shown in groups.items():
        out.print(records_table(title, shown, list(shown[0])))
    unattributed = events["request_id"].isna() & events["event_type"].isin(["view", "purchase"])
    out.print(f"Only events carrying a response's request_id and a served item are attributed "
              f"({int(unattributed.sum()):,} views and purchases in the period carry none).")

