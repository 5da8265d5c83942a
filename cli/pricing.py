"""`tailor pricing`: suggest prices for merchandisers and store them for review."""

import json
from pathlib import Path
from typing import Annotated

import typer

import db
from cli import inputs
from cli.inputs import (
    CatalogOption,
    ChannelPricesOption,
    ChannelsOption,
    EventsOption,
    JsonFlag,
    PeriodOption,
)
from cli.output import fail, out, records_table, table
from db.suggestions import get_batch
from features.errors import InputError
from features.progress import stages
from features.settings import get_settings
from training.pricing.suggest import run_price_tests, run_suggest

SUGGESTION_FIELDS = ("item_id", "channel", "current_price", "suggested_price",
                     "expected_profit_current", "expected_profit_suggested", "bound_by",
                     "explanation")

TEST_FIELDS = ("item_id", "channel", "current_price", "test_price", "elasticity",
               "elasticity_sd", "elasticity_sd_after", "expected_cost", "expected_value")

GuardrailsOption = Annotated[Path | None, typer.Option(
    rich_help_panel=inputs.INPUTS,
    help="Guardrails YAML; default: the defaults of guardrails.example.yaml")]

app = typer.Typer(help="Suggest prices for merchandisers and store them for review.",
                  no_args_is_help=True)


@app.command("suggest")
def suggest_command(
    events: EventsOption = None, catalog: CatalogOption = None, channels: ChannelsOption = None,
    guardrails: GuardrailsOption = None,
    channel_prices: ChannelPricesOption = None,
    items: Annotated[str | None, typer.Option(
        help="Comma-separated item ids: price just these (a targeted run, e.g. after a stock "
             "change), with the registered champion when there is one")] = None,
    approval_policy: Annotated[Path | None, typer.Option(
        rich_help_panel=inputs.INPUTS,
        help="Approval policy YAML (see approval_policy.example.yaml): suggestions inside its "
             "low-risk envelope are approved at once, by 'policy'; default: "
             "$TAILOR_APPROVAL_POLICY, else none (every suggestion waits for a person)")] = None,
    period: PeriodOption = "W",
    as_json: JsonFlag = False,
) -> None:
    """Suggest a price per item x channel and store the batch as pending for review.

    Trains the demand model first, as `tailor train pricing` does (with --items, only when no
    champion is registered); prices obey the guardrails.
    """
    named = None if items is None else [item.strip() for item in items.split(",")
                                        if item.strip()]
    if named is not None and not named:
        fail("--items names no item id")
    market = inputs.market(events, catalog, channels, guardrails, channel_prices)
    try:
        with stages(["training, suggesting and storing"]) as done:
            batch_id, result = run_suggest(
                get_settings(), events_dir=market.events.path, catalog_file=market.catalog,
                channels_file=market.channels, guardrails_file=guardrails, period=period,
                channel_prices_file=market.channel_prices, items=named,
                approval_policy_file=approval_policy)
            done()
    except (OSError, InputError) as error:
        fail(str(error))
    suggested = result.suggestions[list(SUGGESTION_FIELDS)]
    if as_json:
        print(json.dumps({"batch_id": batch_id,
                          "suggestions": json.loads(suggested.to_json(orient="records")),
                          "skipped": json.loads(result.skipped.to_json(orient="records"))}))
        return
    with db.service_database(get_settings()) as engine:
        batch = get_batch(engine, batch_id)
    approved = batch["status_counts"]["approved"] if batch else 0
    moved = suggested[suggested["suggested_price"] != suggested["current_price"]]
    gain = (suggested["expected_profit_suggested"] - suggested["expected_profit_current"]).sum()
    out.print(table(f"Price suggestions, batch {batch_id}", {
        "suggestions": len(suggested), "price changes": len(moved),
        "skipped": len(result.skipped), "approved by the approval policy": approved,
        "expected profit change per period": f"{gain:+,.2f}"}))


@app.command("tests")
def tests_command(
    events: EventsOption = None, catalog: CatalogOption = None, channels: ChannelsOption = None,
    guardrails: GuardrailsOption = None,
    channel_prices: ChannelPricesOption = None,
    test_days: Annotated[int, typer.Option(
        min=1, help="Days each test price runs before the current price comes back")] = 28,
    horizon_days: Annotated[int, typer.Option(
        min=1, help="Days the better decisions a test allows are counted for")] = 182,
    max_tests: Annotated[int | None, typer.Option(
        min=0, help="At most this many tests, best net value first; default: every test "
                    "worth its cost")] = None,
    out_file: Annotated[Path | None, typer.Option(
        "--out", help="Also write every planned test, with its explanation, to this CSV")] = None,
    period: PeriodOption = "W",
    as_json: JsonFlag = False,
) -> None:
    """Plan price tests: for the prices the suggestions keep because the data cannot tell
    their response, the temporary test prices whose evidence is worth more than they cost.

    Uses the registered champion (trained first when there is none); nothing is stored.
    """
    market = inputs.market(events, catalog, channels, guardrails, channel_prices)
    try:
        with stages(["planning price tests"]) as done:
            model_version, tests = run_price_tests(
                get_settings(), events_dir=market.events.path, catalog_file=market.catalog,
                channels_file=market.channels, guardrails_file=guardrails, period=period,
                channel_prices_file=market.channel_prices, test_days=test_days,
                horizon_days=horizon_days, max_tests=max_tests)
            done()
        if out_file is not None:
            out_file.parent.mkdir(parents=True, exist_ok=True)
            tests.to_csv(out_file, index=False)
    except (OSError, InputError) as error:
        fail(str(error))
    if as_json:
        print(json.dumps({"model_version": model_version,
                          "tests": json.loads(tests.to_json(orient="records"))}))
        return
    out.print(records_table(f"Price tests worth running ({model_version}), best first",
                            tests.head(20).to_dict("records"), TEST_FIELDS))
    out.print(table("Price tests", {
        "tests": len(tests), "expected cost": f"{tests['expected_cost'].sum():+,.2f}",
        "expected value afterwards": f"{tests['expected_value'].sum():+,.2f}"}))
