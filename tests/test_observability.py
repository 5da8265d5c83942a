"""Observability (issue #18): `/metrics` series by route template, the fallback counter, the
model version and feature-store reads; JSON and text log lines with the request id; spans of
a personalised request (request, recommend, store reads) in an in-memory exporter; readiness
before the recommender is loaded. On the real app: SQLite service database, and for the
personalised path the ranker `tests.test_serving` trains on the real export."""

import io
import json
import logging
import uuid

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from features.settings import Settings
from serving import observability
from serving.app import create_app
from serving.config import ServingSettings
from tests import test_serving
from tests.conftest import key_headers

trained = test_serving.trained  # the module's fixture: a ranker trained and champion
RECS = "/v1/users/{user_id}/recommendations"
TEST_LOGGER = "tests.observability"


def samples(client: TestClient) -> dict[tuple[str, frozenset], float]:
    """Every sample of `/metrics` (asked for with no key) by name and labels."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def value(scraped: dict, name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


def with_test_routes(app: FastAPI) -> FastAPI:
    """`app` plus a route that logs one line and one that raises."""

    def logs() -> dict:
        logging.getLogger(TEST_LOGGER).info("inside %s", "a request")
        return {}

    def fails() -> dict:
        raise RuntimeError("boom")

    app.add_api_route("/test/logs", logs)
    app.add_api_route("/test/fails", fails)
    return app


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The app with its lifespan running and no recommender model (the fallback answers),
    with the test routes; a storefront key's headers."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("observability") / "data",
                        feast_project=f"t{uuid.uuid4().hex[:8]}")
    headers = key_headers(settings, "storefront")
    app = with_test_routes(create_app(settings, ServingSettings()))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, headers


def test_metrics_count_requests_by_route_template_with_fallbacks_and_version(plain):
    client, headers = plain
    before = samples(client)

    answers = [client.get(f"/v1/users/{user}/recommendations", headers=headers)
               for user in ("alice", "bob", "alice")]
    anonymous = client.get("/v1/users/alice/recommendations")
    missing = client.get("/no/such/path/alice")
    failed = client.get("/test/fails")
    after = samples(client)

    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert all(answer.json()["fallback"] for answer in answers)
    assert (anonymous.status_code, missing.status_code, failed.status_code) == (401, 404, 500)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("tailor_http_request_duration_seconds_count", method="GET", route=RECS) == 4
    assert delta("tailor_http_request_duration_seconds_sum", method="GET", route=RECS) > 0
    assert delta("tailor_http_responses_total", method="GET", route=RECS, status="200") == 3
    assert delta("tailor_http_responses_total", method="GET", route=RECS, status="401") == 1
    assert delta("tailor_http_responses_total", method="GET", route="unmatched",
                 status="404") == 1
    assert delta("tailor_http_responses_total", method="GET", route="/test/fails",
                 status="500") == 1
    assert delta("tailor_http_exceptions_total", method="GET", route="/test/fails",
                 exception="RuntimeError") == 1
    assert delta("tailor_recommendations_total", fallback="true") == 3
    assert delta("tailor_recommendations_total", fallback="false") == 0
    assert value(after, "tailor_model_version", version="none") == 1
    assert not any("alice" in str(labels) for _, labels in after)  # never the raw path


def test_metrics_are_open_and_out_of_the_schema(plain):
    client, _ = plain

    scraped = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    schema = client.get("/openapi.json").json()

    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("application/openmetrics-text")
    assert scraped.text.rstrip().endswith("# EOF")
    assert "/metrics" not in schema["paths"]


def test_metrics_off_record_nothing_and_are_not_served(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", feast_project=f"t{uuid.uuid4().hex[:8]}")
    headers = key_headers(settings, "storefront")

    def recorded() -> dict[tuple[str, frozenset], float]:
        text = observability.exposition(None)[0].decode()
        return {(sample.name, frozenset(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples if sample.name.startswith("tailor_")}

    try:
        with TestClient(create_app(settings, ServingSettings(metrics=False))) as client:
            before = recorded()
            answer = client.get("/v1/users/alice/recommendations", headers=headers)
            scraped = client.get("/metrics")
            after = recorded()
    finally:
        observability.set_metrics(True)

    assert answer.status_code == 200 and answer.json()["fallback"] is True
    assert scraped.status_code == 404
    assert after == before


@pytest.fixture
def log_lines():
    """Lines the test logger writes, formatted as `tailor serve --log-format json` does."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(observability.JsonFormatter())
    logger = logging.getLogger(TEST_LOGGER)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lambda: stream.getvalue().splitlines()
    finally:
        logger.removeHandler(handler)


def test_json_log_lines_carry_the_request_id(plain, log_lines):
    client, _ = plain

    response = client.get("/test/logs")
    logging.getLogger(TEST_LOGGER).warning("outside")

    inside, outside = (json.loads(line) for line in log_lines())
    assert response.status_code == 200
    assert inside["request_id"] == response.headers["X-Request-ID"]
    assert inside["level"] == "INFO" and inside["logger"] == TEST_LOGGER
    assert inside["message"] == "inside a request"
    assert inside["time"].endswith("+00:00")
    assert outside["message"] == "outside" and "request_id" not in outside


def test_text_log_lines_end_with_the_request_id():
    record = logging.LogRecord(TEST_LOGGER, logging.INFO, __file__, 1, "hello", None, None)
    token = observability.REQUEST_ID.set("abc")
    try:
        inside = observability.TextFormatter().format(record)
    finally:
        observability.REQUEST_ID.reset(token)

    assert inside.endswith(f"INFO {TEST_LOGGER}: hello [abc]")
    assert observability.TextFormatter().format(record).endswith("hello")


def test_readiness_says_loading_before_the_lifespan_loads(tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "data"), ServingSettings())
    client = TestClient(app)  # not entered: the lifespan has not run

    ready = client.get("/readyz")
    health = client.get("/healthz")

    assert ready.status_code == 503
    assert ready.json()["reason"].startswith("loading")
    assert ready.json()["model_version"] is None
    assert health.status_code == 200


def test_tracing_off_is_one_shared_no_op():
    assert observability.span("a") is observability.span("b")
    assert observability.request_span("GET") is observability.span("a")
    with observability.span("a") as current:
        assert current is None


def test_span_exporters_by_setting():
    assert observability.span_exporter("none") is None
    assert isinstance(observability.span_exporter("console"), ConsoleSpanExporter)
    assert isinstance(observability.span_exporter("otlp"), OTLPSpanExporter)


def test_personalised_request_traced_through_store_and_counted(trained):
    app = create_app(trained.settings, ServingSettings(clock="model"))
    headers = key_headers(trained.settings, "storefront")
    exporter = InMemorySpanExporter()
    with TestClient(app, headers=headers) as client:
        before = samples(client)
        observability.start_tracing(exporter)
        try:
            response = client.get(f"/v1/users/{trained.user}/recommendations",
                                  params={"k": 5})
            again = client.get(f"/v1/users/{trained.user}/recommendations", params={"k": 3})
        finally:
            observability.stop_tracing()  # exports what is buffered
        after = samples(client)

    assert response.status_code == 200 and response.json()["fallback"] is False
    assert again.json()["items"] == response.json()["items"][:3]  # from the cached list
    traced = exporter.get_finished_spans()
    first = next(span for span in traced if span.name == f"GET {RECS}").context.trace_id
    spans = {span.name: span for span in traced if span.context.trace_id == first}
    request = spans[f"GET {RECS}"]
    assert {"recommend", "cache", "store.user", "store.request_features", "model"} <= set(spans)
    assert {span.context.trace_id for span in spans.values()} == {request.context.trace_id}
    assert request.attributes["http.route"] == RECS
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["tailor.request_id"] == response.headers["X-Request-ID"]
    by_id = {span.context.span_id: span for span in spans.values()}
    for name in ("recommend", "cache", "store.user", "store.request_features", "model"):
        ancestors, span = [], spans[name]
        while span.parent is not None:
            span = by_id[span.parent.span_id]
            ancestors.append(span.name)
        assert ancestors[-1] == request.name, (name, ancestors)

    for read in ("user", "request_features"):
        assert (value(after, "tailor_feature_store_read_seconds_count", read=read)
                > value(before, "tailor_feature_store_read_seconds_count", read=read))
    assert (value(after, "tailor_recommendations_total", fallback="false")
            - value(before, "tailor_recommendations_total", fallback="false")) == 2
    for outcome, added in (("miss", 1), ("hit", 1), ("shared", 0)):
        assert (value(after, "tailor_result_cache_lookups_total", outcome=outcome)
                - value(before, "tailor_result_cache_lookups_total", outcome=outcome)) == added
    assert value(after, "tailor_model_version", version=trained.version) == 1
