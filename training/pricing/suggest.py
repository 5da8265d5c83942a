"""Price suggestions: offers priced by a demand model under the guardrails, stored as a pending
batch for review."""

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

import db
from db import suggestions
from db.channels import load_destinations
from db.policy import load_approval_policy
from features.errors import InputError
from features.settings import Settings
from models.pricing.artifacts import (
    IncompatibleDemandModelError,
    RegisteredDemand,
    load_demand_model,
)
from models.pricing.demand import DemandModel, Period, demand_curves
from models.pricing.experiments import plan_price_tests
from models.pricing.guardrails import Guardrails, load_guardrails
from models.pricing.offers import build_offers, default_as_of
from models.pricing.optimizer import OptimizationResult, optimize_prices
from training.pricing.market import Market, load_market_files
from training.pricing.train import train_pricing


def _priced_offers(
    market: Market, guardrails: Guardrails, model: DemandModel, model_version: str, as_of,
    period: Period, items: Sequence[str] | None,
) -> tuple[pd.DataFrame, OptimizationResult]:
    as_of = default_as_of(market.events) if as_of is None else as_of
    offers = build_offers(market.events, market.catalog, market.channels, as_of, period,
                          market.channel_prices, model)
    if items is not None:
        unknown = sorted(set(items) - set(offers["item_id"]))
        if unknown:
            raise InputError(f"--items: no sales before {pd.Timestamp(as_of).date()} to price "
                             f"from for {', '.join(unknown)}")
        offers = offers[offers["item_id"].isin(items)].reset_index(drop=True)
    curves = demand_curves(model, offers, guardrails.confidence_percent)
    return offers, optimize_prices(offers, curves, guardrails, model_version)


def suggest_prices(
    market: Market, guardrails: Guardrails, model: DemandModel, model_version: str, as_of=None,
    period: Period = "W", items: Sequence[str] | None = None,
) -> OptimizationResult:
    """Price suggestions for every offer sold before `as_of` (default: the end of the log),
    or for the offers of `items` only, from a demand model trained on `period` panels."""
    return _priced_offers(market, guardrails, model, model_version, as_of, period, items)[1]


def _loadable_champion(settings: Settings) -> RegisteredDemand | None:
    try:
        return load_demand_model(settings)
    except (LookupError, IncompatibleDemandModelError):
        return None


def run_suggest(
    settings: Settings, events_dir: Path, catalog_file: Path, channels_file: Path,
    guardrails_file: Path | None = None, period: Period = "W", as_of=None,
    channel_prices_file: Path | None = None, items: Sequence[str] | None = None,
    approval_policy_file: Path | None = None,
) -> tuple[str, OptimizationResult]:
    """Train (`train_pricing`), suggest prices with the champion (the new model when it was
    promoted) and store them as a pending batch in `settings.database`; returns the batch id
    and the optimizer's result. Without `guardrails_file`, the default guardrails apply.

    With `items` (a targeted run, e.g. after a stock change), only their offers are priced,
    by the registered champion when there is one that this code loads (no training).

    The approval policy of `approval_policy_file` (default: `settings.approval_policy`, else
    none) approves the suggestions inside its envelope that the channels config
    (`settings.channels_config`) can deliver as the batch is stored."""
    market = load_market_files(events_dir, catalog_file, channels_file, channel_prices_file)
    guardrails = load_guardrails(guardrails_file) if guardrails_file else Guardrails()
    policy_file = approval_policy_file or settings.approval_policy
    policy = load_approval_policy(policy_file) if policy_file else None
    destinations = (load_destinations(settings.channels_config)
                    if policy and settings.channels_config else None)
    champion = _loadable_champion(settings) if items is not None else None
    if champion is None:
        report = train_pricing(settings, market, period, as_of=as_of)
        as_of = report.as_of
        if not report.promoted:
            champion = load_demand_model(settings)
    if champion is None:
        model, model_version, model_period = report.model, report.model_version, period
    else:
        model, model_version, model_period = (champion.model, champion.model_version,
                                              champion.period)
    result = suggest_prices(market, guardrails, model, model_version, as_of, model_period, items)
    categories = dict(zip(market.catalog["item_id"], market.catalog["category"], strict=True))
    with db.service_database(settings) as engine:
        batch_id = suggestions.save_batch(engine, result.suggestions, result.skipped,
                                          model_version, guardrails.model_dump(mode="json"),
                                          categories, policy, destinations)
    return batch_id, result


def run_price_tests(
    settings: Settings, events_dir: Path, catalog_file: Path, channels_file: Path,
    guardrails_file: Path | None = None, period: Period = "W",
    channel_prices_file: Path | None = None, test_days: int = 28, horizon_days: int = 182,
    max_tests: int | None = None,
) -> tuple[str, pd.DataFrame]:
    """The price tests worth running now (`plan_price_tests`) with the registered champion,
    trained first (`train_pricing`) when none this code loads is registered; returns the
    model version and the tests. Nothing is stored: a test is a merchandiser's decision."""
    market = load_market_files(events_dir, catalog_file, channels_file, channel_prices_file)
    guardrails = load_guardrails(guardrails_file) if guardrails_file else Guardrails()
    champion = _loadable_champion(settings)
    if champion is None:
        report = train_pricing(settings, market, period)
        model, model_version, model_period = report.model, report.model_version, period
    else:
        model, model_version, model_period = (champion.model, champion.model_version,
                                              champion.period)
    offers, result = _priced_offers(market, guardrails, model, model_version, None,
                                    model_period, None)
    return model_version, plan_price_tests(model, offers, result.suggestions, guardrails,
                                           model_period, test_days, horizon_days, max_tests)
