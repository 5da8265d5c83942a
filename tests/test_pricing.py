import json
import math
import uuid
from datetime import UTC, datetime

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from cli.main import app
from db import engine_for, migrate
from db.suggestions import count_suggestions, get_batch, list_suggestions, save_batch
from db.tables import PriceSuggestionRow, SkippedOfferRow, SuggestionBatchRow
from features.settings import Settings, get_settings
from features.simulator import CHANNEL_PRICES_FILE, simulate_market, write_simulation
from models import registry
from models.pricing.artifacts import MODEL_NAME, load_demand_model
from models.pricing.guardrails import Guardrails
from models.pricing.offers import build_offers, decision_period, default_as_of
from models.pricing.optimizer import optimize_prices
from tests.conftest import event
from training.pricing.evaluate import (
    evaluate_price_tests,
    evaluate_pricing,
    guardrail_violations,
)
from training.pricing.fit import fit_demand
from training.pricing.market import load_market_files, read_simulation
from training.pricing.suggest import run_suggest
from training.pricing.train import train_pricing

FEES = {"web": (2.9, 0.30), "etsy": (6.5, 0.20), "amazon": (15.0, 0.0)}
EVALUATION_KEYS = {"oracle_fraction", "keep_current_fraction", "naive_argmax_fraction",
                   "violations", "suggestions", "skipped", "suggestions_profit",
                   "keep_current_profit", "naive_argmax_profit", "oracle_profit"}
LOOSE = Guardrails(min_margin_percent=0, max_change_percent=500, price_endings=(),
                   max_channel_spread_percent=1000, trust_band_percent=1000)


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    """A small simulated market on disk: 200 days, 300 users, 12 items, 3 channels."""
    folder = tmp_path_factory.mktemp("market")
    write_simulation(simulate_market(200, 300, 12, seed=11), folder)
    return folder


@pytest.fixture(scope="module")
def market(sim_dir):
    return read_simulation(sim_dir)


@pytest.fixture(scope="module")
def year_market():
    """A year of history, as a shop planning price tests has: 300 users, 12 items."""
    return simulate_market(365, 300, 12, seed=11)


@pytest.fixture
def store(empty_database):
    """An engine on an empty suggestion store, migrated (SQLite and PostgreSQL)."""
    migrate(empty_database)
    return empty_database


def offer(item_id: str, channel: str, current: float, cost: float = 1.0) -> dict:
    fee_percent, fee_fixed = FEES[channel]
    return {"item_id": item_id, "channel": channel, "unit_cost": cost,
            "fee_percent": fee_percent, "fee_fixed": fee_fixed, "current_price": current,
            "min_price": 0.5, "max_price": 100.0, "observed_min_price": current * 0.9,
            "observed_max_price": current * 1.1, "reference_price": 20.0, "elasticity": 1.5}


def semilog_demand(rows: pd.DataFrame, prices: np.ndarray) -> np.ndarray:
    return 3.0 * np.exp(-rows["elasticity"].to_numpy()
                        * (prices / rows["reference_price"].to_numpy() - 1))


def optimized(offers: list[dict]):
    """A real optimizer result on a closed-form demand: prices, bound_by lists, explanations."""
    return optimize_prices(pd.DataFrame(offers), semilog_demand, Guardrails(), "demand-model:7")


def table_counts(engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {table.__tablename__: connection.scalar(select(func.count()).select_from(table))
                for table in (SuggestionBatchRow, PriceSuggestionRow, SkippedOfferRow)}


# ---------------------------------------------------------------------- suggestion store


def test_save_batch_lists_back_rows_with_filters(store):
    older = optimized([offer("p1", "web", 5.99)])
    older_id = save_batch(store, older.suggestions, older.skipped, "demand-model:6",
                          Guardrails().model_dump(mode="json"), {"p1": "sewing"})
    # p3 has no observed prices: the optimizer skips it.
    newer = optimized([offer("p1", "web", 6.49), offer("p1", "etsy", 6.99),
                       offer("p2", "web", 12.99), {**offer("p3", "web", 4.99),
                                                   "observed_min_price": None,
                                                   "observed_max_price": None}])
    categories = {"p1": "sewing", "p2": "quilting"}
    newer_id = save_batch(store, newer.suggestions, newer.skipped, "demand-model:7",
                          Guardrails().model_dump(mode="json"), categories)

    rows = list_suggestions(store)
    assert [(r["batch_id"], r["item_id"], r["channel"]) for r in rows] == [
        (newer_id, "p1", "etsy"), (newer_id, "p1", "web"), (newer_id, "p2", "web"),
        (older_id, "p1", "web"),
    ]
    first = rows[0]
    expected = newer.suggestions.set_index(["item_id", "channel"]).loc[("p1", "etsy")]
    assert first["suggested_price"] == pytest.approx(expected["suggested_price"])
    assert first["expected_profit_suggested"] == pytest.approx(
        expected["expected_profit_suggested"])
    assert first["bound_by"] == list(expected["bound_by"])
    assert isinstance(first["bound_by"], list)
    assert "max_change" in first["bound_by"]  # the optimum, about 14.7, is out of reach
    assert first["status"] == "pending" and first["reviewed_at"] is None
    assert first["category"] == "sewing" and first["model_version"] == "demand-model:7"
    assert first["created_at"].tzinfo is not None

    assert {r["item_id"] for r in list_suggestions(store, category="quilting")} == {"p2"}
    assert [r["channel"] for r in list_suggestions(store, channel="etsy")] == ["etsy"]
    assert len(list_suggestions(store, batch_id=older_id)) == 1
    with store.begin() as connection:
        connection.execute(update(PriceSuggestionRow)
                           .where(PriceSuggestionRow.id == rows[2]["id"])
                           .values(status="approved", reviewed_at=datetime.now(UTC)))
    approved = list_suggestions(store, status="approved")
    assert [(r["item_id"], r["channel"]) for r in approved] == [("p2", "web")]
    assert approved[0]["reviewed_at"].tzinfo is not None
    # The newer batch priced p1 on the web again: the older pending suggestion is superseded.
    assert [(r["batch_id"], r["reviewed_by"]) for r in list_suggestions(
        store, status="superseded")] == [(older_id, "system")]
    assert len(list_suggestions(store, status="pending", channel="web")) == 1
    assert list_suggestions(store, limit=2, offset=1) == list_suggestions(store)[1:3]
    assert count_suggestions(store) == 4
    assert count_suggestions(store, status="pending", channel="web") == 1

    batch = get_batch(store, newer_id)
    assert batch["model_version"] == "demand-model:7"
    assert batch["guardrails"]["max_change_percent"] == 20.0
    assert (batch["suggestion_count"], batch["skipped_count"]) == (3, 1)
    assert batch["status_counts"] == {"pending": 2, "approved": 1, "rejected": 0, "edited": 0,
                                      "superseded": 0}
    assert batch["skipped"][0]["item_id"] == "p3"
    assert "no observed prices" in batch["skipped"][0]["reason"]
    assert get_batch(store, str(uuid.uuid4())) is None


def test_save_batch_writes_nothing_when_a_row_fails(store):
    result = optimized([offer("p1", "web", 6.49), offer("p2", "web", 12.99)])
    guardrails = Guardrails().model_dump(mode="json")

    broken = result.suggestions.copy()
    broken.loc[1, "suggested_price"] = math.nan
    with pytest.raises(ValueError, match="row 1: field 'suggested_price' must be finite"):
        save_batch(store, broken, result.skipped, "demand-model:7", guardrails)
    # A repeated item x channel passes validation and fails in the database, halfway.
    repeated = pd.concat([result.suggestions, result.suggestions.iloc[[0]]], ignore_index=True)
    with pytest.raises(IntegrityError):
        save_batch(store, repeated, result.skipped, "demand-model:7", guardrails)

    assert table_counts(store) == {"suggestion_batches": 0, "price_suggestions": 0,
                                   "skipped_offers": 0}
    save_batch(store, result.suggestions, result.skipped, "demand-model:7", guardrails)
    assert table_counts(store)["price_suggestions"] == 2


def test_list_suggestions_rejects_an_unknown_status(store):
    with pytest.raises(ValueError, match="filter 'status' must be one of pending"):
        list_suggestions(store, status="done")
    with pytest.raises(ValueError, match="filter 'channel'"):
        list_suggestions(store, channel="")


# ---------------------------------------------------------------------------------- offers


def test_build_offers_takes_the_catalog_price_and_the_purchase_range():
    events = pd.DataFrame([
        event("a", "2011-01-03 10:00", unit_price=2.0),
        event("b", "2011-01-04 10:00", unit_price=3.0, quantity=2),
        event("c", "2011-01-05 09:00", "view", unit_price=2.5),
        event("d", "2011-01-06 10:00", "return", unit_price=3.0),  # an old purchase's price
        event("e", "2011-01-11 10:00", unit_price=9.0),  # after as_of
        event("f", "2011-01-03 11:00", item_id="i2", unit_price=7.0),
    ])
    catalog = pd.DataFrame({"item_id": ["i1", "i2"], "category": ["kitchen", "toys"],
                            "unit_cost": [0.5, None], "current_price": [3.49, 6.99],
                            "min_price": [1.0, 2.0], "max_price": [9.0, None]})
    channels = pd.DataFrame({"channel": ["web"], "fee_percent": [2.9], "fee_fixed": [0.3]})
    offers = build_offers(events, catalog, channels, "2011-01-10").set_index("item_id")

    assert offers.loc["i1", "current_price"] == 3.49  # the catalog's, not the last sale's
    assert offers.loc["i2", "current_price"] == 6.99
    assert offers.loc["i1", ["observed_min_price", "observed_max_price"]].tolist() == [2.0, 3.0]
    assert offers.loc["i1", ["unit_cost", "min_price", "max_price"]].tolist() == [0.5, 1.0, 9.0]
    assert offers.loc["i1", ["fee_percent", "fee_fixed"]].tolist() == [2.9, 0.3]
    # The decision row is the week of Jan 10; its features see the weeks before only.
    assert (offers["period_start"] == pd.Timestamp("2011-01-10", tz="UTC")).all()
    assert offers.loc["i1", "units_lag1"] == 3  # 1 + 2 units in the week of Jan 3
    assert offers.loc["i1", "category"] == "kitchen"
    assert offers["stock_on_hand"].isna().all() and (offers["period_days"] == 7).all()
    stocked = build_offers(events, catalog.assign(stock_on_hand=[5, None], restock_days=[14, None]),
                           channels, "2011-01-10", "D").set_index("item_id")
    assert stocked.loc["i1", ["stock_on_hand", "restock_days", "period_days"]].tolist() == [
        5, 14, 1]
    assert stocked.loc["i2", ["stock_on_hand", "restock_days"]].isna().all()

    per_channel = pd.DataFrame({"item_id": ["i1"], "channel": ["web"], "current_price": [2.99]})
    priced = build_offers(events, catalog, channels, "2011-01-10", channel_prices=per_channel)
    assert priced.set_index("item_id")["current_price"].to_dict() == {"i1": 2.99, "i2": 6.99}


def test_an_item_repriced_after_its_last_sale_is_bounded_and_explained_from_its_catalog_price():
    events = pd.DataFrame([event(f"s{week}", str(pd.Timestamp("2011-01-03 10:00")
                                                 + pd.Timedelta(weeks=week)), unit_price=10.0)
                           for week in range(20)])
    catalog = pd.DataFrame({"item_id": ["i1"], "category": ["kitchen"], "unit_cost": [1.0],
                            "current_price": [12.99], "min_price": [1.0], "max_price": [None]})
    channels = pd.DataFrame({"channel": ["web"], "fee_percent": [0.0], "fee_fixed": [0.0]})
    offers = build_offers(events, catalog, channels, "2011-05-23")
    rules = Guardrails(max_change_percent=10, trust_band_percent=500)

    def flat(rows, prices):  # demand that does not respond: the highest allowed price wins
        return np.ones(len(prices))

    suggestion = optimize_prices(offers, flat, rules, "test").suggestions.iloc[0]
    assert suggestion["current_price"] == 12.99
    assert suggestion["suggested_price"] == pytest.approx(13.99)  # 10% above 12.99: 14.28
    assert suggestion["explanation"].startswith("Raise web price 12.99 -> 13.99")
    assert suggestion["bound_by"] == ["max_change"]


def test_build_offers_takes_each_channels_price_from_the_price_list(sim_dir, market):
    listed = pd.read_csv(sim_dir / CHANNEL_PRICES_FILE)
    as_of = default_as_of(market.events)
    offers = build_offers(market.events, market.catalog, market.channels, as_of,
                          channel_prices=market.channel_prices)

    sold = market.events[market.events["event_type"] == "purchase"]
    assert len(offers) == sold.groupby(["item_id", "channel"]).ngroups
    expected = listed.set_index(["item_id", "channel"])["current_price"]
    current = offers.set_index(["item_id", "channel"])["current_price"]
    np.testing.assert_allclose(current, expected.loc[current.index])
    assert (current != current.groupby(level=0).transform("first")).any()  # channels differ

    ranges = sold.groupby(["item_id", "channel"])["unit_price"].agg(["min", "max"])
    indexed = offers.set_index(["item_id", "channel"])
    np.testing.assert_allclose(indexed["observed_min_price"], ranges["min"].loc[indexed.index])
    np.testing.assert_allclose(indexed["observed_max_price"], ranges["max"].loc[indexed.index])
    fees = market.channels.set_index("channel").loc[offers["channel"]]
    np.testing.assert_allclose(offers["fee_percent"], fees["fee_percent"])
    np.testing.assert_allclose(offers["fee_fixed"], fees["fee_fixed"])
    assert (offers["period_start"] == decision_period(as_of, "W")).all()
    assert offers["reference_price"].notna().all()


def test_load_market_files_names_the_missing_column(sim_dir, tmp_path):
    channels = tmp_path / "channels.csv"
    channels.write_text("channel,fee_percent\nweb,2.9\n")
    with pytest.raises(ValueError, match=r"channels\.csv: missing column\(s\) fee_fixed"):
        load_market_files(sim_dir / "events", sim_dir / "catalog.csv", channels)
    with pytest.raises(FileNotFoundError, match="catalog file not found"):
        load_market_files(sim_dir / "events", tmp_path / "missing.csv", sim_dir / "channels.csv")


# ------------------------------------------------------------------------------ evaluation


def test_guardrail_violations_flags_each_broken_rule():
    offers = pd.DataFrame([offer("p1", "web", 10.49), offer("p1", "etsy", 10.99),
                           offer("p2", "web", 4.99, cost=4.0)])
    kept = optimized(offers.to_dict("records")).suggestions
    assert sum(guardrail_violations(offers, kept, Guardrails()).values()) == 0

    broken = kept.assign(suggested_price=[14.37, 10.99, 4.49])
    counts = guardrail_violations(offers, broken, Guardrails())
    # 14.37: +37% (max change), above 10.49 * 1.1 * 1.1 (trust band), ends in .37, and 31%
    # over the etsy price (spread); 4.49 is under p2's margin floor (4.4 + 0.3) / 0.971.
    assert counts == {"min_margin": 1, "min_price": 0, "max_price": 0, "max_change": 1,
                      "trust_band": 1, "price_endings": 1, "channel_spread": 1}


def test_evaluate_pricing_keeps_every_rule_and_stays_below_the_oracle(sim_dir):
    report = evaluate_pricing(sim_dir)

    assert set(report) >= EVALUATION_KEYS
    assert report["violations"] == 0
    assert report["suggestions"] + report["skipped"] == 36  # 12 items x 3 channels
    assert report["suggestions"] > 0
    assert report["oracle_fraction"] <= 1 + 1e-9
    assert report["keep_current_fraction"] <= 1 + 1e-9
    assert report["oracle_fraction"] == pytest.approx(
        report["suggestions_profit"] / report["oracle_profit"])


def test_evaluate_pricing_scores_the_decision_rule_at_other_confidences_on_the_same_fit(
        sim_dir):
    report = evaluate_pricing(sim_dir, rule_confidences=(0.0, 80.0, 99.0))

    at_default = report["rules"][1]
    assert at_default["confidence_percent"] == Guardrails().confidence_percent
    for key in ("uplift_capture", "moved", "moved_losing_share", "gain_over_keep",
                "violations"):
        assert at_default[key] == pytest.approx(report[key])
    moves = [rule["moved"] for rule in report["rules"]]
    assert moves == sorted(moves, reverse=True)  # a surer rule moves no more prices
    assert moves[0] > moves[2]  # on expected gains alone, a thin market's prices all move
    assert all(rule["violations"] == 0 for rule in report["rules"])


def test_evaluate_pricing_oracle_finds_the_closed_form_optimum(sim_dir):
    report = evaluate_pricing(sim_dir, guardrails=LOOSE)

    truth = pd.read_parquet(sim_dir / "ground_truth.parquet")
    prices = report["prices"].merge(truth, on=["item_id", "channel"])
    assert report["skipped"] == 0 and len(prices) == 36
    assert np.abs(prices["oracle_price"] - prices["optimal_price"]).max() <= 0.01 + 1e-9
    assert report["violations"] == 0


# -------------------------------------------------------------------------------- training


def test_fit_demand_prices_with_a_refit_that_saw_the_validation_weeks(market):
    fitted = fit_demand(market.events, market.catalog, "W")

    def references(model) -> pd.Series:
        return model.price_response.table.set_index(["item_id", "channel"])["reference_price"]

    def latest_prices(panel: pd.DataFrame) -> pd.Series:
        rows = panel[panel["age_periods"] > 0].sort_values("period_start")
        return rows.groupby(["item_id", "channel"])["price"].last()

    before_window = fitted.panel[fitted.panel["period_start"] < fitted.valid_start]
    refit, validated = references(fitted.model), references(fitted.validated)
    np.testing.assert_allclose(refit, latest_prices(fitted.panel).reindex(refit.index))
    np.testing.assert_allclose(validated, latest_prices(before_window).reindex(validated.index))
    assert (refit.reindex(validated.index) != validated).any()  # some price moved in the window
    assert fitted.model.fitted_rounds == fitted.validated.fitted_rounds
    assert fitted.model.structural_rounds == fitted.validated.structural_rounds


def test_train_pricing_keeps_the_champion_over_a_worse_model(sim_dir, market, tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    first = train_pricing(settings, market)
    assert first.promoted and first.reason == "no champion yet"
    assert first.metrics["model"]["wape"] < first.metrics["last_week"]["wape"]

    second = train_pricing(settings, market, n_estimators=1)

    assert not second.promoted and "not better" in second.reason
    assert second.champion_version == first.version
    assert second.champion_score == pytest.approx(first.metrics["model"]["wape"])
    assert second.metrics["model"]["wape"] > second.champion_score
    assert str(registry.champion(MODEL_NAME).version) == first.version
    client = MlflowClient()
    run = client.get_run(second.run_id)
    assert run.data.tags["promoted"] == "false"
    assert run.data.tags["promotion_reason"] == second.reason
    assert {"model_wape", "model_mae", "last_week_wape", "mean_4w_mae",
            "champion_wape"} <= set(run.data.metrics)
    assert run.data.params["period"] == "W"
    artifacts = {a.path for a in client.list_artifacts(first.run_id)}
    assert {"price_response.png", "demand_model.json"} <= artifacts
    assert mlflow.get_tracking_uri().startswith("sqlite:///")

    champion = load_demand_model(settings)
    offers = build_offers(market.events, market.catalog, market.channels, first.as_of)
    np.testing.assert_allclose(champion.model.predict_at_prices(offers, offers["current_price"]),
                               first.model.predict_at_prices(offers, offers["current_price"]),
                               rtol=1e-9)
    # The champion was scored (above) by its model fitted before the window, not its refit.
    assert champion.metadata["trained_until"] == first.as_of.isoformat()
    unseen = load_demand_model(settings, unseen_from=first.valid_start)
    assert unseen.metadata["trained_until"] == first.valid_start.isoformat()
    assert unseen.version == champion.version


def test_run_suggest_stores_a_pending_batch(sim_dir, tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    guardrails_file = tmp_path / "guardrails.yaml"
    guardrails_file.write_text("max_change_percent: 10\n")

    batch_id, result = run_suggest(settings, sim_dir / "events", sim_dir / "catalog.csv",
                                   sim_dir / "channels.csv", guardrails_file)

    engine = engine_for(settings.database)
    stored = list_suggestions(engine, batch_id=batch_id)
    batch = get_batch(engine, batch_id)
    engine.dispose()
    assert len(stored) == len(result.suggestions) > 0
    assert {row["status"] for row in stored} == {"pending"}
    assert {row["model_version"] for row in stored} == {f"{MODEL_NAME}:1"}
    assert all(row["category"] for row in stored)
    assert batch["guardrails"]["max_change_percent"] == 10
    assert batch["skipped_count"] == len(result.skipped)
    changes = result.suggestions["suggested_price"] / result.suggestions["current_price"] - 1
    assert (changes.abs() <= 0.10 + 1e-9).all()


def test_pricing_tests_command_plans_tests_on_kept_offers_and_writes_them(
        year_market, tmp_path, monkeypatch):
    sim_dir = tmp_path / "market"
    write_simulation(year_market, sim_dir)
    monkeypatch.setenv("TAILOR_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, [
            "pricing", "tests", "--events", str(sim_dir / "events"), "--catalog",
            str(sim_dir / "catalog.csv"), "--channels", str(sim_dir / "channels.csv"),
            "--test-days", "56", "--out", str(tmp_path / "tests.csv"), "--json"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output.strip().splitlines()[-1])
    assert answer["model_version"] == f"{MODEL_NAME}:1"  # trained: no champion yet
    written = pd.read_csv(tmp_path / "tests.csv")
    assert len(written) == len(answer["tests"]) > 0
    assert (written["test_days"] == 56).all()
    assert (written["net_value"] > 0).all()
    changes = written["test_price"] / written["current_price"] - 1
    assert ((changes.abs() > 0) & (changes.abs() <= 0.20 + 1e-9)).all()
    market = read_simulation(sim_dir)
    offers = build_offers(market.events, market.catalog, market.channels,
                          default_as_of(market.events), "W", market.channel_prices)
    current = offers.set_index(["item_id", "channel"])["current_price"]
    planned = written.set_index(["item_id", "channel"])
    assert np.allclose(current.loc[planned.index], planned["current_price"])


def test_evaluate_price_tests_plays_the_tests_forward_beside_a_keep_arm(year_market, tmp_path):
    market = year_market
    report = evaluate_price_tests(market, tmp_path / "tests", 300, test_days=28, days=42,
                                  seed=5)
    assert report["tests"] > 0
    keep, test = report["arms"]["keep"], report["arms"]["test"]
    assert keep["violations"] == test["violations"] == 0
    assert report["test_period_gain"] != 0  # the arms' prices differed on the tested offers
    assert report["net_gain"] == pytest.approx(
        report["test_period_gain"] + 182 * (test["gain_over_keep"] - keep["gain_over_keep"]))
    # Without tests both arms are the same market, drawn from the same seed.
    idle = evaluate_price_tests(market, tmp_path / "idle", 300, test_days=28, days=42, seed=5,
                                max_tests=0)
    assert idle["tests"] == 0 and idle["test_period_gain"] == 0
    assert idle["arms"]["keep"] == idle["arms"]["test"]
    assert idle["arms"]["keep"]["uplift_capture"] == keep["uplift_capture"]
    assert idle["arms"]["keep"]["tested_oracle_gain"] == 0  # no offer tested
    assert keep["tested_oracle_gain"] > 0
