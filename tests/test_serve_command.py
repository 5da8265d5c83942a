"""`tailor serve` as deployed: two uvicorn workers in a process of their own, JSON logs,
metrics shared between the workers, graceful shutdown on SIGTERM. On a data directory with
a migrated SQLite service database and no model (the fallback answers)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from features.settings import Settings
from serving.app import create_app
from serving.config import ServingSettings

TAILOR = Path(sys.executable).parent / "tailor"
WORKERS = 2
START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def json_lines(text: str) -> list[dict]:
    """The log's JSON objects (other lines, such as Python warnings, skipped)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def wait_started(process: subprocess.Popen, log: Path, url: str) -> None:
    """Until every worker has logged its startup and `/healthz` answers."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        started = sum(line["message"] == "Application startup complete."
                      for line in json_lines(log.read_text()))
        if started == WORKERS:
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.5)
    raise AssertionError(f"not started in {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def test_serve_two_workers_json_logs_shared_metrics_graceful_stop(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", feast_project=f"t{uuid.uuid4().hex[:8]}")
    with TestClient(create_app(settings, ServingSettings())):
        pass  # migrated once here: two workers starting together would race to do it
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("TAILOR_", "MLFLOW_", "PROMETHEUS_", "OTEL_"))}
    env.update(TAILOR_DATA_DIR=str(settings.data_dir),
               TAILOR_FEAST_PROJECT=settings.feast_project)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [str(TAILOR), "serve", "--port", str(port), "--workers", str(WORKERS),
             "--log-format", "json", "--timeout-graceful-shutdown", "5"],
            cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True)  # its own process group: the workers too
    try:
        wait_started(process, log, url)
        with httpx.Client(base_url=url) as client:  # new connections: both workers answer
            health = [httpx.get(f"{url}/healthz") for _ in range(20)]
            ready = client.get("/readyz")
            scraped = [client.get("/metrics").text for _ in range(4)]
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    lines = json_lines(log.read_text())
    assert code == 0, log.read_text()[-3000:]
    assert all(response.status_code == 200 for response in health)
    assert ready.status_code == 503  # no model is registered
    for text in scraped:  # whichever worker answers, it counts both workers' requests
        values = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                  for family in text_string_to_metric_families(text)
                  for sample in family.samples}
        assert values[("tailor_http_responses_total",
                       (("method", "GET"), ("route", "/healthz"), ("status", "200")))] >= 20
        assert values[("tailor_model_version", (("version", "none"),))] == WORKERS
    assert sum(line["message"].startswith("Started server process") for line in lines) == WORKERS
    request_id = health[-1].headers["X-Request-ID"]
    access = [line for line in lines if line.get("request_id") == request_id]
    assert len(access) == 1 and access[0]["logger"] == "uvicorn.access"
    assert "GET /healthz" in access[0]["message"]
    assert sum(line["message"] == "Application shutdown complete." for line in lines) == WORKERS
