"""`POST /v1/events` on the app with its lifespan: accepted batches are in the stream as one
entry; bad, oversized and duplicate input is refused whole, naming each bad event; an
unreachable stream answers 503 with Retry-After and accepts nothing."""

import uuid

import pytest
from fastapi.testclient import TestClient

from features.settings import Settings
from features.stream import EVENTS
from serving.app import create_app
from serving.config import ServingSettings
from serving.routes.events import MAX_BODY_BYTES, MAX_EVENTS
from tests.conftest import key_headers


def shopper_event(event_id: str, **changes) -> dict:
    return {"event_id": event_id, "event_type": "purchase", "user_id": "u1",
            "session_id": "s1", "item_id": "i1", "ts": "2026-12-04T10:00:00Z", "quantity": 2,
            "unit_price": 3.5, "currency": "GBP", "channel": "web", **changes}


@pytest.fixture
def api(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", feast_project=f"t{uuid.uuid4().hex[:8]}")
    headers = key_headers(settings, "storefront")
    with TestClient(create_app(settings, ServingSettings())) as client:
        yield client, headers, client.app.state.stream


def test_a_batch_is_accepted_as_one_entry_with_its_request_ids(api):
    client, headers, stream = api
    batch = [shopper_event("e1", request_id="r-9"),
             {"event_id": "e2", "event_type": "inventory", "item_id": "i1",
              "ts": "2026-12-04T10:00:01+01:00", "channel": "web", "stock_on_hand": 3}]
    response = client.post("/v1/events", json=batch, headers=headers)
    assert (response.status_code, response.json()) == (202, {"accepted": 2})
    (entry,) = stream.read("test", 10, 0.1)
    assert entry.kind == EVENTS
    assert [r["event_id"] for r in entry.records] == ["e1", "e2"]
    assert entry.records[0]["request_id"] == "r-9"
    assert entry.records[1]["ts"] == "2026-12-04T09:00:01Z"  # stored in UTC


def test_one_event_may_come_alone(api):
    client, headers, stream = api
    response = client.post("/v1/events", json=shopper_event("e1"), headers=headers)
    assert (response.status_code, response.json()) == (202, {"accepted": 1})
    assert stream.backlog() == 1


def test_a_bad_batch_names_every_bad_event_and_writes_none(api):
    client, headers, stream = api
    batch = [shopper_event("e1"), shopper_event("e2", quantity=0),
             shopper_event("e3", event_type="purchase", unit_price=None),
             shopper_event("e4", event_type="inventory")]
    response = client.post("/v1/events", json=batch, headers=headers)
    assert response.status_code == 422
    places = [tuple(problem["loc"][:3]) for problem in response.json()["detail"]]
    assert ("body", 1, "quantity") in places
    assert [place[1] for place in places] == [1, 2, 3]
    assert stream.backlog() == 0


def test_duplicate_ids_in_one_batch_are_refused(api):
    client, headers, stream = api
    response = client.post("/v1/events", json=[shopper_event("e1"), shopper_event("e2"),
                                               shopper_event("e1", quantity=5)],
                           headers=headers)
    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert problem["loc"] == ["body", 2, "event_id"]
    assert "event 0" in problem["msg"]
    assert stream.backlog() == 0


@pytest.mark.parametrize("body", [b"", b"{not json", b"[]", b"42", b'"text"'])
def test_what_is_not_events_is_refused(api, body):
    client, headers, stream = api
    response = client.post("/v1/events", content=body, headers=headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]
    assert stream.backlog() == 0


def test_oversized_batches_are_refused(api):
    client, headers, stream = api
    too_many = [shopper_event(f"e{n}") for n in range(MAX_EVENTS + 1)]
    response = client.post("/v1/events", json=too_many, headers=headers)
    assert response.status_code == 422
    assert f"at most {MAX_EVENTS} events" in response.json()["detail"][0]["msg"]
    huge = b"[" + b" " * MAX_BODY_BYTES + b"]"
    assert client.post("/v1/events", content=huge, headers=headers).status_code == 413
    assert stream.backlog() == 0
    full = [shopper_event(f"e{n}") for n in range(MAX_EVENTS)]
    assert client.post("/v1/events", json=full, headers=headers).status_code == 202


def test_an_unreachable_stream_answers_503_with_retry_after(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", feast_project="tdown",
                        redis_url="redis://127.0.0.1:1/0")
    headers = key_headers(settings, "storefront")
    with TestClient(create_app(settings, ServingSettings())) as client:
        response = client.post("/v1/events", json=shopper_event("e1"), headers=headers)
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) > 0
        recommendations = client.get("/v1/users/u1/recommendations", headers=headers)
        assert (recommendations.status_code, recommendations.json()["fallback"]) == (200, True)


def test_numbers_and_times_must_have_their_json_types(api):
    client, headers, stream = api
    batch = [shopper_event("e1", quantity="3"), shopper_event("e2", unit_price=True),
             shopper_event("e3", ts=1733306400), shopper_event("e4", quantity=2.0)]
    response = client.post("/v1/events", json=batch, headers=headers)
    assert response.status_code == 422
    places = [tuple(problem["loc"]) for problem in response.json()["detail"]]
    assert places == [("body", 0, "quantity"), ("body", 1, "unit_price"), ("body", 2, "ts")]
    assert stream.backlog() == 0
