"""A real Redis Cluster for the tests: three local redis-server processes in cluster mode
(own folders, no persistence), joined by `redis-cli --cluster create`, and `store_settings`
with it as a third online store backend.

A test module uses them with `pytest_plugins = ["tests.redis_cluster"]` (one cluster for the
session, whichever modules ask) and `store_settings = <this module>.store_settings` (overrides
conftest's there). Imported before pytest loads it as a plugin, so PYTEST_DONT_REWRITE: its
asserts are not rewritten, and pytest does not warn about that.
"""

import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from features.settings import Settings
from tests.conftest import delete_project_keys


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 (held open together while picked)."""
    with ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


def installed(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: the Redis Cluster tests start their own "
                    "redis-server processes (apt-get install redis-server)")
    return path


class LocalRedisCluster:
    """`size` redis-server processes on free ports, each a primary of a part of the slots."""

    def __init__(self, folder: Path, size: int = 3):
        self.folder = folder
        ports = free_ports(2 * size)  # a client port and a cluster bus port for each
        self.ports, self.bus_ports = ports[:size], ports[size:]
        self.processes: list[subprocess.Popen] = []

    @property
    def nodes(self) -> str:
        """`host:port,...` of every node: the value of `TAILOR_REDIS_CLUSTER_NODES`."""
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def client(self) -> RedisCluster:
        return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in self.ports])

    def start(self, timeout: float = 30.0) -> None:
        server, cli = installed("redis-server"), installed("redis-cli")
        for port, bus_port in zip(self.ports, self.bus_ports, strict=True):
            folder = self.folder / str(port)
            folder.mkdir()
            self.processes.append(subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
                 "--cluster-enabled", "yes", "--cluster-port", str(bus_port),
                 "--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no",
                 "--logfile", "redis.log"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout
        clients = [redis.Redis(port=port) for port in self.ports]
        for client in clients:
            self._wait(deadline, "answer", client.ping)
        created = subprocess.run(
            [cli, "--cluster", "create", *self.nodes.split(","), "--cluster-replicas", "0",
             "--cluster-yes"], capture_output=True, text=True, timeout=timeout, check=False)
        if created.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed:\n{created.stdout}{created.stderr}")
        for client in clients:
            self._wait(deadline, "report cluster_state:ok",
                       lambda c=client: c.cluster("info")["cluster_state"] == "ok")
            client.close()

    def _wait(self, deadline: float, what: str, check) -> None:
        """Poll `check` until it is true, or fail naming the nodes' logs."""
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except redis.ConnectionError:
                pass
            if any(process.poll() is not None for process in self.processes):
                break
            time.sleep(0.05)
        logs = "\n".join(f"{log}:\n{log.read_text()[-2000:]}"
                         for log in sorted(self.folder.glob("*/redis.log")))
        pytest.fail(f"the local Redis Cluster on ports {self.ports} did not {what}\n{logs}")

    @contextmanager
    def hung(self, key: bytes) -> Iterator[None]:
        """The node holding `key` stopped (SIGSTOP: it accepts connections and never
        answers, like a hung server) for the duration, then resumed."""
        with self.client() as client:
            port = client.get_node_from_key(key).port
        process = self.processes[self.ports.index(int(port))]
        process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory) -> Iterator[LocalRedisCluster]:
    """A running three-node `LocalRedisCluster`, stopped at the end of the session."""
    cluster = LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "redis", "redis_cluster"])
def store_settings(request, tmp_path) -> Iterator[Settings]:
    """conftest's `store_settings` (SQLite, the shared Redis), and the local Redis Cluster as
    the online store; the project's keys are deleted afterwards."""
    if request.param != "redis_cluster":
        # This fixture overrides conftest's: asked for by name here, pytest hands out that
        # one, with this fixture's parameter.
        yield request.getfixturevalue("store_settings")
        return
    cluster: LocalRedisCluster = request.getfixturevalue("redis_cluster")
    project = f"t{uuid.uuid4().hex[:12]}"
    yield Settings(data_dir=tmp_path / "data", redis_cluster_nodes=cluster.nodes,
                   feast_project=project)
    client = cluster.client()
    delete_project_keys(client, project)
    assert not list(client.scan_iter(match=f"*{project}")), "keys of the test were left"
    client.close()


def keys_per_node(nodes: str, project: str) -> list[int]:
    """How many keys of a Feast project each node of a cluster (`host:port,...`) holds."""
    counts = []
    for node in nodes.split(","):
        host, port = node.rsplit(":", 1)
        with redis.Redis(host=host, port=int(port)) as client:
            counts.append(sum(1 for _ in client.scan_iter(match=f"*{project}")))
    return counts
