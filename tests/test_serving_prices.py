"""The price-suggestion endpoints end to end: the FastAPI app with its lifespan running, on a
SQLite file and on the real PostgreSQL, reading batches stored by `save_batch` from real
optimizer results (the newer batch with the uncertainty of each suggestion, the older one
without). The data directory holds no recommender model: the service falls back."""

import math
import typing
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from db import engine_for, migrate
from db.migrations import current_revision, head
from db.schemas import BOUND_FIELDS, STATUSES, UNCERTAINTY_FIELDS
from db.suggestions import save_batch
from db.tables import PriceSuggestionRow
from features.settings import Settings
from models.pricing.guardrails import Guardrails
from models.pricing.optimizer import RULES, optimize_prices
from serving import schemas
from serving.app import create_app
from serving.config import ServingSettings
from tests.conftest import key_headers, service_settings
from tests.test_db_migrations import NO_UNCERTAINTY, baseline_database, store_baseline_rows

UNREACHABLE_URL = "postgresql+psycopg://postgres@127.0.0.1:1/test"  # nothing listens there
FEES = {"web": (2.9, 0.30), "etsy": (6.5, 0.20), "amazon": (15.0, 0.0)}
CATEGORIES = {"p1": "sewing", "p2": "quilting", "p3": "sewing", "p4": "sewing"}
FIELDS = {
    "id", "batch_id", "item_id", "channel", "category", "current_price", "suggested_price",
    "expected_units_current", "expected_units_suggested", "expected_revenue_current",
    "expected_revenue_suggested", "expected_profit_current", "expected_profit_suggested",
    "bound_by", "explanation", "model_version", "status", "created_at", "reviewed_at",
    *UNCERTAINTY_FIELDS, *BOUND_FIELDS, "approved_price", "reviewed_by",
}
NUMBERS = [field for field in FIELDS if field.startswith(("current_", "suggested_", "expected_"))
           and field not in UNCERTAINTY_FIELDS]
URL = "/v1/price-suggestions"
UNKNOWN = ("p2", "amazon")  # the newer batch's suggestion whose uncertainty is NaN


def offer(item_id: str, channel: str, current: float, **overrides) -> dict:
    fee_percent, fee_fixed = FEES[channel]
    return {"item_id": item_id, "channel": channel, "unit_cost": 1.0,
            "fee_percent": fee_percent, "fee_fixed": fee_fixed, "current_price": current,
            "min_price": 0.5, "max_price": 100.0, "observed_min_price": current * 0.9,
            "observed_max_price": current * 1.1, "reference_price": 20.0, "elasticity": 1.5,
            **overrides}


def semilog_demand(rows: pd.DataFrame, prices: np.ndarray) -> np.ndarray:
    return 3.0 * np.exp(-rows["elasticity"].to_numpy()
                        * (prices / rows["reference_price"].to_numpy() - 1))


def optimized(offers: list[dict], model_version: str):
    return optimize_prices(pd.DataFrame(offers), semilog_demand, Guardrails(), model_version)


def with_uncertainty(suggestions: pd.DataFrame, unknown: tuple[str, str]) -> pd.DataFrame:
    """The suggestions with uncertainty columns shaped as a model with uncertainty gives them
    (replacing any the optimizer gave), all NaN for the `unknown` (item, channel)."""
    frame = suggestions.copy()
    gain = frame["expected_profit_suggested"] - frame["expected_profit_current"]
    elasticity = 1.5 * frame["current_price"] / 20.0  # the semilog demand's, at the price
    frame["expected_profit_gain_low"] = gain - 0.25
    frame["expected_profit_gain_high"] = gain + 0.75
    frame["elasticity"] = elasticity
    frame["elasticity_low"] = elasticity * 0.8
    frame["elasticity_high"] = elasticity * 1.3
    frame["evidence_share"] = np.linspace(0.1, 0.9, len(frame))
    is_unknown = (frame["item_id"] == unknown[0]) & (frame["channel"] == unknown[1])
    assert is_unknown.sum() == 1
    frame.loc[is_unknown, list(UNCERTAINTY_FIELDS)] = math.nan
    return frame


class Stored(typing.NamedTuple):
    client: TestClient
    older_id: str
    newer_id: str
    newer: pd.DataFrame  # the newer batch's optimizer suggestions
    approved: tuple[str, str]  # (item, channel) approved in the newer batch


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stored(request, tmp_path_factory):
    """Two batches saved in an empty service database (the default SQLite file of the data
    dir, or a fresh schema of the real PostgreSQL, dropped afterwards), one suggestion
    approved, and the app running on it."""
    data_dir = tmp_path_factory.mktemp("prices") / "data"
    with ExitStack() as stack:
        yield from _stored_app(service_settings(stack, request.param, data_dir,
                                                "test_serving_prices"))


def _stored_app(settings: Settings):
    engine = engine_for(settings.database)
    try:
        migrate(engine)
        guardrails = Guardrails().model_dump(mode="json")
        # An item the newer batch does not price: it stays pending (not superseded).
        older = optimized([offer("p4", "web", 5.99)], "demand-model:6")
        # A model without uncertainty: the frame lacks the columns.
        older_suggestions = older.suggestions.drop(columns=list(UNCERTAINTY_FIELDS),
                                                   errors="ignore")
        older_id = save_batch(engine, older_suggestions, older.skipped, "demand-model:6",
                              guardrails, CATEGORIES)
        # p9 has no observed prices: the optimizer skips it.
        newer = optimized([offer("p1", "web", 6.49), offer("p1", "etsy", 6.99),
                           offer("p2", "web", 12.99), offer("p2", "amazon", 13.49),
                           offer("p3", "etsy", 4.49),
                           offer("p9", "web", 4.99, observed_min_price=None,
                                 observed_max_price=None)], "demand-model:7")
        newer_suggestions = with_uncertainty(newer.suggestions, UNKNOWN)
        newer_id = save_batch(engine, newer_suggestions, newer.skipped, "demand-model:7",
                              guardrails, CATEGORIES)
        with engine.begin() as connection:
            connection.execute(update(PriceSuggestionRow)
                               .where(PriceSuggestionRow.batch_id == newer_id,
                                      PriceSuggestionRow.item_id == "p2",
                                      PriceSuggestionRow.channel == "web")
                               .values(status="approved", reviewed_at=datetime.now(UTC)))
        with TestClient(create_app(settings, ServingSettings()),
                        headers=key_headers(settings, "admin")) as client:
            yield Stored(client, older_id, newer_id, newer_suggestions, ("p2", "web"))
    finally:
        engine.dispose()


def listing(client: TestClient, **params) -> dict:
    response = client.get(URL, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def offers_of(body: dict) -> list[tuple[str, str]]:
    return [(item["item_id"], item["channel"]) for item in body["items"]]


def test_list_pending_suggestions_with_every_field(stored):
    body = listing(stored.client)

    # Default: pending only, newest batch first, then item and channel.
    assert offers_of(body) == [("p1", "etsy"), ("p1", "web"), ("p2", "amazon"), ("p3", "etsy"),
                               ("p4", "web")]
    assert [item["batch_id"] for item in body["items"]] == [stored.newer_id] * 4 + [
        stored.older_id]
    assert (body["total"], body["limit"], body["offset"]) == (5, 100, 0)
    expected = stored.newer.set_index(["item_id", "channel"])
    for item in body["items"][:4]:
        assert set(item) == FIELDS
        row = expected.loc[(item["item_id"], item["channel"])]
        for field in NUMBERS:
            assert item[field] == pytest.approx(row[field]), field
        assert item["bound_by"] == list(row["bound_by"])
        assert item["explanation"] == row["explanation"]
        assert item["category"] == CATEGORIES[item["item_id"]]
        assert item["model_version"] == "demand-model:7"
        assert item["status"] == "pending" and item["reviewed_at"] is None
        assert datetime.fromisoformat(item["created_at"]).tzinfo is not None
        assert isinstance(item["id"], int)
    assert all(isinstance(item["bound_by"], list) for item in body["items"])
    assert any(item["bound_by"] for item in body["items"])  # p1's optimum is out of reach
    assert len({item["id"] for item in body["items"]}) == 5


def test_serve_the_uncertainty_of_each_suggestion_null_when_unknown(stored):
    items = listing(stored.client)["items"]
    expected = stored.newer.set_index(["item_id", "channel"])

    unknown = [item for item in items if item["batch_id"] == stored.older_id or (
        item["item_id"], item["channel"]) == UNKNOWN]
    assert len(unknown) == 2
    assert [{name: item[name] for name in UNCERTAINTY_FIELDS} for item in unknown] == [
        NO_UNCERTAINTY] * 2
    known = [item for item in items if item not in unknown]
    assert len(known) == 3
    for item in known:
        row = expected.loc[(item["item_id"], item["channel"])]
        for name in UNCERTAINTY_FIELDS:
            assert isinstance(item[name], float) and item[name] == pytest.approx(row[name]), name
        assert item["expected_profit_gain_low"] <= item["expected_profit_gain_high"]
        assert item["elasticity_low"] <= item["elasticity"] <= item["elasticity_high"]


def test_filter_by_status_channel_category_and_batch(stored):
    approved = listing(stored.client, status="approved")
    assert offers_of(approved) == [stored.approved] and approved["total"] == 1
    assert approved["items"][0]["status"] == "approved"
    assert datetime.fromisoformat(approved["items"][0]["reviewed_at"]).tzinfo is not None
    assert listing(stored.client, status="rejected")["total"] == 0

    assert offers_of(listing(stored.client, channel="etsy")) == [("p1", "etsy"), ("p3", "etsy")]
    sewing = listing(stored.client, category="sewing", channel="web")
    assert offers_of(sewing) == [("p1", "web"), ("p4", "web")]
    assert {item["batch_id"] for item in sewing["items"]} == {stored.newer_id, stored.older_id}
    assert offers_of(listing(stored.client, category="quilting")) == [("p2", "amazon")]
    older = listing(stored.client, batch_id=stored.older_id)
    assert offers_of(older) == [("p4", "web")]
    assert listing(stored.client, channel="ebay")["total"] == 0

    # Empty filters are ignored; status `any` lists every status.
    every = listing(stored.client, status="any", channel="", category="", batch_id="")
    assert every["total"] == 6
    assert offers_of(every)[:5] == [("p1", "etsy"), ("p1", "web"), ("p2", "amazon"),
                                    ("p2", "web"), ("p3", "etsy")]
    assert offers_of(listing(stored.client, status="any", category="quilting")) == [
        ("p2", "amazon"), ("p2", "web")]


def test_paginate_with_limit_and_offset(stored):
    every = listing(stored.client, status="any")["items"]

    pages = [listing(stored.client, status="any", limit=4, offset=offset)
             for offset in (0, 4, 8)]
    assert [page["total"] for page in pages] == [6, 6, 6]
    assert [(page["limit"], page["offset"]) for page in pages] == [(4, 0), (4, 4), (4, 8)]
    assert [len(page["items"]) for page in pages] == [4, 2, 0]
    assert pages[0]["items"] + pages[1]["items"] == every
    assert listing(stored.client, limit=500)["total"] == 5


@pytest.mark.parametrize("params, field", [
    ({"status": "bogus"}, "status"),
    ({"status": "PENDING"}, "status"),
    ({"status": ""}, "status"),  # outside the enum: not "any status"
    ({"limit": 0}, "limit"),
    ({"limit": 501}, "limit"),
    ({"offset": -1}, "offset"),
    ({"offset": 2**63}, "offset"),  # beyond the database's integers
])
def test_reject_invalid_query_naming_the_field(stored, params, field):
    response = stored.client.get(URL, params=params)

    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["query", field]]
    if field == "status":
        assert "pending" in response.json()["detail"][0]["msg"]


def test_batch_summary_and_unknown_batch(stored):
    response = stored.client.get(f"{URL}/batches/{stored.newer_id}")

    assert response.status_code == 200, response.text
    batch = response.json()
    assert batch["id"] == stored.newer_id
    assert batch["model_version"] == "demand-model:7"
    assert batch["guardrails"] == Guardrails().model_dump(mode="json")
    assert (batch["suggestion_count"], batch["skipped_count"]) == (5, 1)
    assert batch["status_counts"] == {"pending": 4, "approved": 1, "rejected": 0, "edited": 0,
                                      "superseded": 0}
    assert [(s["item_id"], s["channel"]) for s in batch["skipped"]] == [("p9", "web")]
    assert "no observed prices" in batch["skipped"][0]["reason"]
    assert datetime.fromisoformat(batch["created_at"]).tzinfo is not None

    unknown = str(uuid.uuid4())
    missing = stored.client.get(f"{URL}/batches/{unknown}")
    assert missing.status_code == 404
    assert missing.json() == {"detail": f"no suggestion batch with id '{unknown}'"}
    assert stored.client.get(f"{URL}/batches/%20").status_code == 404


def test_answer_without_a_recommender_model(stored):
    ready = stored.client.get("/readyz")
    recommendation = stored.client.get("/v1/users/someone/recommendations")

    assert ready.status_code == 503 and "no `champion`" in ready.json()["reason"]
    assert recommendation.status_code == 200 and recommendation.json()["fallback"] is True
    assert listing(stored.client)["total"] == 5
    assert "X-Request-ID" in stored.client.get(URL).headers


def test_database_unreachable_answers_503_while_recommending(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", database_url=UNREACHABLE_URL,
                        feast_project=f"t{uuid.uuid4().hex[:8]}")

    with TestClient(create_app(settings),
                    headers={"Authorization": "Bearer tlr_never-verified"}) as client:
        listed = client.get(URL)
        batch = client.get(f"{URL}/batches/{uuid.uuid4()}")
        recommendation = client.get("/v1/users/someone/recommendations")

    # No key can be verified: 503 (not 401: the key may well be valid).
    for response in (listed, batch, recommendation):
        assert response.status_code == 503
        assert "service database is unavailable" in response.json()["detail"]


def test_keys_verified_before_a_database_outage_keep_recommending(tmp_path):
    folder = tmp_path / "db"
    folder.mkdir()
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{folder / 'x.db'}",
                        feast_project=f"t{uuid.uuid4().hex[:8]}")
    storefront = key_headers(settings, "storefront")
    merchandiser = key_headers(settings, "merchandiser")

    with TestClient(create_app(settings)) as client:
        client.app.state.keys.seconds = 0.0  # every request goes to the database
        before = client.get("/v1/users/someone/recommendations", headers=storefront)
        client.app.state.database.engine.dispose()
        folder.rename(tmp_path / "gone")  # new connections fail from here on
        during = client.get("/v1/users/someone/recommendations", headers=storefront)
        listed = client.get(URL, headers=merchandiser)

    assert before.status_code == 200 and during.status_code == 200
    assert during.json()["fallback"] is True
    assert listed.status_code == 503  # never verified: cannot be now


def test_create_tables_once_the_database_is_reachable(tmp_path):
    folder = tmp_path / "db"  # missing at startup: SQLite cannot open the file there
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{folder / 'x.db'}",
                        feast_project=f"t{uuid.uuid4().hex[:8]}")

    unknown = {"Authorization": "Bearer tlr_unknown"}
    with TestClient(create_app(settings)) as client:
        before = client.get(URL, headers=unknown)
        folder.mkdir()
        refused = client.get(URL, headers=unknown)  # the service made the tables to look
        after = client.get(URL, headers=key_headers(settings, "merchandiser"))

    assert before.status_code == 503
    assert refused.status_code == 401
    assert after.status_code == 200
    assert after.json() == {"items": [], "total": 0, "limit": 100, "offset": 0}
    assert Path(folder / "x.db").exists()


def test_contract_literals_match_the_store():
    assert typing.get_args(schemas.SuggestionStatus) == STATUSES
    assert typing.get_args(schemas.StatusFilter) == (*STATUSES, "any")
    assert set(typing.get_args(schemas.GuardrailRule)) == set(RULES)


def test_service_upgrades_a_database_made_before_migrations_at_start(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", feast_project=f"t{uuid.uuid4().hex[:8]}")
    settings.data_dir.mkdir(parents=True)
    engine = engine_for(settings.database)
    baseline_database(engine, stamped=False)  # the tables the service made before migrations
    batch_id = store_baseline_rows(engine)

    with TestClient(create_app(settings)) as client:
        with engine.connect() as connection:
            assert current_revision(connection) == head()  # upgraded at start
        listed = client.get(URL, headers=key_headers(settings, "admin"))
    engine.dispose()
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert [item["batch_id"] for item in items] == [batch_id] * 2
    assert all(set(item) == FIELDS for item in items)
    assert [{name: item[name] for name in UNCERTAINTY_FIELDS} for item in items] == [
        NO_UNCERTAINTY] * 2
