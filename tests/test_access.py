"""Access control end to end: every route of the served OpenAPI schema called with no key, an
unknown key, a revoked key and a key of each role, on the app with its lifespan running (no
recommender model: recommendations fall back); and `tailor keys` printing a key once while
storing only its hash."""

import hashlib
import re
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from cli.main import app as cli
from db import engine_for
from db.keys import revoke_key
from db.tables import ApiKeyRow
from features.settings import Settings, get_settings
from serving.app import create_app
from serving.config import ServingSettings
from tests.conftest import key_headers

PUBLIC = {("get", "/healthz"), ("get", "/readyz")}
# The role each path prefix needs; admin keys may call every route.
NEEDED = {"/v1/users/": "storefront", "/v1/events": "storefront",
          "/v1/price-suggestions": "merchandiser", "/v1/price-decisions": "merchandiser",
          "/v1/channel-deliveries": "merchandiser", "/v1/admin/": "admin"}
PATH_VALUES = {"user_id": "someone", "suggestion_id": "1", "batch_id": str(uuid.uuid4()),
               "delivery_id": "1"}
runner = CliRunner()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("access") / "data"
    settings = Settings(data_dir=data_dir, feast_project=f"t{uuid.uuid4().hex[:8]}")
    headers = {role: key_headers(settings, role)
               for role in ("storefront", "merchandiser", "admin")}
    revoked = key_headers(settings, "storefront")  # the newest key: revoked below
    engine = engine_for(settings.database)
    with engine.connect() as connection:
        name = connection.scalar(select(ApiKeyRow.name).order_by(ApiKeyRow.id.desc()))
    revoke_key(engine, name)
    engine.dispose()
    with TestClient(create_app(settings, ServingSettings())) as client:
        yield client, headers, revoked


def routes(client: TestClient) -> list[tuple[str, str, str]]:
    """(method, templated path, concrete path) of every operation the served schema lists."""
    schema = client.get("/openapi.json").json()
    return [(method, path, re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path))
            for path, operations in schema["paths"].items() for method in operations]


def call(client: TestClient, method: str, path: str, headers: dict | None = None):
    return client.request(method.upper(), path, headers=headers or {},
                          json={} if method == "post" else None)


def needed_role(path: str) -> str:
    return next(role for prefix, role in NEEDED.items() if path.startswith(prefix))


def test_every_route_but_health_needs_a_key_of_its_role(served):
    client, headers, _ = served
    listed = routes(client)
    assert {(method, path) for method, path, _ in listed} >= PUBLIC
    assert len(listed) >= 12  # recommendations, reload, the review routes and the log

    for method, path, concrete in listed:
        anonymous = call(client, method, concrete)
        if (method, path) in PUBLIC:
            assert anonymous.status_code not in (401, 403), (method, path)
            continue
        assert anonymous.status_code == 401, (method, path, anonymous.text)
        assert anonymous.headers["WWW-Authenticate"] == "Bearer"
        assert "missing API key" in anonymous.json()["detail"]
        role = needed_role(path)
        for caller, header in headers.items():
            response = call(client, method, concrete, header)
            if caller in (role, "admin"):
                assert response.status_code not in (401, 403), (caller, method, path)
            else:
                assert response.status_code == 403, (caller, method, path, response.text)
                assert f"the role '{role}'" in response.json()["detail"]
                assert f"has the role '{caller}'" in response.json()["detail"]


def test_unknown_revoked_and_malformed_keys_get_401(served):
    client, _, revoked = served
    url = "/v1/users/someone/recommendations"

    unknown = client.get(url, headers={"Authorization": "Bearer tlr_not-a-key"})
    withdrawn = client.get(url, headers=revoked)
    basic = client.get(url, headers={"Authorization": "Basic dXNlcjpwYXNz"})

    for response in (unknown, withdrawn):
        assert response.status_code == 401
        assert response.json()["detail"] == "unknown or revoked API key"
    assert basic.status_code == 401 and "missing API key" in basic.json()["detail"]


def test_schema_declares_the_bearer_scheme_on_keyed_routes(served):
    client, _, _ = served
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for method, path, _ in routes(client):
        operation = schema["paths"][path][method]
        if (method, path) in PUBLIC:
            assert "security" not in operation
        else:
            assert operation["security"] == [{"HTTPBearer": []}], (method, path)
            assert {"401", "403"} <= set(operation["responses"]), (method, path)


def test_keys_cli_prints_a_key_once_and_stores_only_its_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("TAILOR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TAILOR_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        created = runner.invoke(cli, ["keys", "create", "--role", "merchandiser",
                                      "--name", "alice"])
        duplicate = runner.invoke(cli, ["keys", "create", "--role", "admin", "--name", "alice"])
        bad_role = runner.invoke(cli, ["keys", "create", "--role", "owner"])
        listed = runner.invoke(cli, ["keys", "list"])
        revoked = runner.invoke(cli, ["keys", "revoke", "alice"])
        again = runner.invoke(cli, ["keys", "revoke", "alice"])
        demo = runner.invoke(cli, ["keys", "demo"])
        settings = get_settings()
    finally:
        get_settings.cache_clear()

    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert re.fullmatch(r"tlr_[A-Za-z0-9_-]{43}", key)  # alone on stdout
    assert "alice" in created.stderr and key not in created.stderr
    assert duplicate.exit_code == 2 and "exists already" in duplicate.stderr
    assert bad_role.exit_code == 2 and "field 'role'" in bad_role.stderr
    assert listed.exit_code == 0 and "alice" in listed.stdout and key not in listed.stdout
    assert revoked.exit_code == 0 and again.exit_code == 2
    assert demo.exit_code == 0 and "exist already" in demo.stderr  # keys exist: none made

    engine = engine_for(settings.database)
    with engine.connect() as connection:
        rows = connection.execute(select(ApiKeyRow)).all()
    engine.dispose()
    assert len(rows) == 1
    stored = rows[0]._mapping
    assert stored["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in {str(value) for value in stored.values()}
    assert stored["revoked_at"] is not None


def test_demo_keys_are_made_once_on_a_fresh_database(tmp_path, monkeypatch):
    monkeypatch.setenv("TAILOR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TAILOR_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        first = runner.invoke(cli, ["keys", "demo"])
        second = runner.invoke(cli, ["keys", "demo"])
        settings = get_settings()
    finally:
        get_settings.cache_clear()

    keys = dict(re.findall(r"(demo-\w+): (tlr_\S+)", first.stdout))
    assert set(keys) == {"demo-merchandiser", "demo-storefront"}
    assert second.exit_code == 0 and "tlr_" not in second.stdout
    with TestClient(create_app(settings)) as client:
        storefront = {"Authorization": f"Bearer {keys['demo-storefront']}"}
        merchandiser = {"Authorization": f"Bearer {keys['demo-merchandiser']}"}
        assert client.get("/v1/users/someone/recommendations",
                          headers=storefront).status_code == 200
        assert client.get("/v1/price-suggestions", headers=merchandiser).status_code == 200
        assert client.get("/v1/price-suggestions", headers=storefront).status_code == 403
