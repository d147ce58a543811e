"""Redis Sentinel: a real 1-master 1-replica 3-Sentinel set on loopback ports; a worker configured with
`[redis] sentinels` runs tasks, `SENTINEL FAILOVER` swaps the master under load, and nothing is lost: the same
worker process follows the new master by itself, and producers that connect afterwards reach it too."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from gopherq import Client
from gopherq.core import codec
from gopherq.core.settings import load_settings
from tests.chaos.conftest import Fleet, print_figures, queue_sizes, queue_stats, results
from tests.support.common import GOPHERQ, free_port, wait_until, write_config
from tests.support.loopback import LoopbackServer

SERVICE = "gopherq-test"
PASSWORD = "data-pw"  # of the master and the replica
SENTINEL_PASSWORD = "sentinel-pw"  # of the Sentinels themselves
BEFORE = 600  # tasks queued before the failover
AFTER = 100  # tasks enqueued through Sentinel after it


def _start(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class SentinelSet:
    """One master, one replica and three Sentinels, each a redis-server of the test's own in `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: list[subprocess.Popen[bytes]] = []
        self.master_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        for name, port, extra in (
            ("master", self.master_port, []),
            ("replica", self.replica_port, ["--replicaof", "127.0.0.1", str(self.master_port)]),
        ):
            data = directory / name
            data.mkdir()
            # Both may become master, and both replicate from the other then: each has the password and knows it.
            auth = ["--requirepass", PASSWORD, "--masterauth", PASSWORD]
            command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", ""]
            command += ["--appendonly", "yes", "--logfile", str(data / "redis.log"), *auth, *extra]
            self.procs.append(_start(command))
        for index, port in enumerate(self.sentinel_ports):
            conf = directory / f"sentinel-{index}.conf"  # Sentinel rewrites its file: it must be its own
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\nlogfile {directory / f'sentinel-{index}.log'}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 2000\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel auth-pass {SERVICE} {PASSWORD}\n"
                f"requirepass {SENTINEL_PASSWORD}\nsentinel sentinel-pass {SENTINEL_PASSWORD}\n"
            )
            self.procs.append(_start(["redis-server", str(conf), "--sentinel"]))

    def client(self, port: int) -> redis.Redis:
        password = SENTINEL_PASSWORD if port in self.sentinel_ports else PASSWORD
        return redis.Redis(port=port, password=password, socket_timeout=5, socket_connect_timeout=2)

    def master_address(self, sentinel_port: int) -> int | None:
        try:
            with self.client(sentinel_port) as sentinel:
                address = sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        except redis.ConnectionError:
            return None
        return int(address[1]) if address else None

    def wait_ready(self) -> None:
        """Replica in sync, and every Sentinel knows the replica and the two other Sentinels."""

        def synced() -> bool:
            try:
                with self.client(self.replica_port) as replica:
                    return bool(replica.info("replication").get("master_link_status") == "up")
            except redis.ConnectionError:
                return False

        def known(port: int) -> bool:
            try:
                with self.client(port) as sentinel:
                    replicas = sentinel.execute_command("SENTINEL", "REPLICAS", SERVICE)
                    others = sentinel.execute_command("SENTINEL", "SENTINELS", SERVICE)
            except (redis.ConnectionError, redis.ResponseError):
                return False
            return len(replicas) == 1 and len(others) == 2

        wait_until(synced, timeout=30, what="the replica to sync")
        for port in self.sentinel_ports:
            wait_until(lambda port=port: known(port), timeout=30, what=f"Sentinel {port} to see the whole set")

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    servers = SentinelSet(tmp_path)
    try:
        servers.wait_ready()
        yield servers
    finally:
        servers.stop()


@pytest.mark.chaos
def test_a_sentinel_failover_under_load_loses_nothing_and_the_worker_follows_by_itself(
    tmp_path: Path, queue_name: str, sentinel_set: SentinelSet, fleet: Fleet, loopback: LoopbackServer
) -> None:
    sentinels = ", ".join(f'"127.0.0.1:{port}"' for port in sentinel_set.sentinel_ports)
    config = write_config(
        tmp_path,
        f'[redis]\nsentinels = [{sentinels}]\nservice_name = "{SERVICE}"\npassword = "{PASSWORD}"\n'
        f'sentinel_password = "{SENTINEL_PASSWORD}"\n[queue]\nname = "{queue_name}"\n'
        "[worker]\nconcurrency = 50\nlease_timeout = 2.0\nheartbeat_interval = 0.5\nreaper_interval = 0.5\n"
        'promote_interval = 0.1\n[plugins.logging]\nevents = ["worker.*", "task.recovered"]\n',
    )
    checked = subprocess.run([GOPHERQ, "check", "-c", str(config)], env=fleet.env, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert f"127.0.0.1:{sentinel_set.sentinel_ports[0]}" in checked.stdout

    url = loopback.url("/ok?min_ms=20&max_ms=60")
    ids = [f"s{i:04d}" for i in range(BEFORE)]
    master = sentinel_set.client(sentinel_set.master_port)
    master.rpush(queue_name, *(codec.dumps({"id": task_id, "url": url}) for task_id in ids))
    assert master.execute_command("WAIT", 1, 10000) == 1  # the replica holds every queued task
    master.close()

    worker = fleet.start(config)
    wait_until(lambda: sum(1 for t in ids if loopback.count(t)) >= 100, timeout=60, what="100 tasks to complete")
    with sentinel_set.client(sentinel_set.sentinel_ports[0]) as sentinel:
        assert sentinel.execute_command("SENTINEL", "FAILOVER", SERVICE)
    done_at_failover = sum(1 for t in ids if loopback.count(t))
    for port in sentinel_set.sentinel_ports:
        wait_until(
            lambda port=port: sentinel_set.master_address(port) == sentinel_set.replica_port,
            timeout=60,
            what=f"Sentinel {port} to name the replica the new master",
        )

    # A producer that connects through the Sentinels now reaches the new master.
    with Client(load_settings(config, environ={})) as client:
        later = [client.enqueue_http(loopback.url("/ok")) for _ in range(AFTER)]
    everything = ids + later

    new_master = sentinel_set.client(sentinel_set.replica_port)
    assert new_master.info("replication")["role"] == "master"

    def drained() -> bool:
        sizes = queue_sizes(new_master, queue_name)
        finished = results(new_master, queue_name, everything)
        return sizes["ready"] == sizes["inflight"] == 0 and all(finished.values())

    wait_until(drained, timeout=120, interval=0.3, what="every task to finish on the new master")
    records = results(new_master, queue_name, everything)
    lost = [t for t in everything if (records[t] or {}).get("status") != "succeeded"]
    calls = loopback.snapshot()
    stats = queue_stats(new_master, queue_name)
    new_master.close()
    print_figures(
        "SENTINEL FAILOVER under a running worker (1 master, 1 replica, 3 Sentinels)",
        {
            "queued before the failover": BEFORE,
            "completed when it was triggered": done_at_failover,
            "enqueued through Sentinel after it": AFTER,
            "lost": len(lost),
            "duplicate deliveries": sum(max(0, calls.get(t, 0) - 1) for t in everything),
            "recovered by the reaper (new master)": stats.get("recovered", 0),
            "worker restarted": "no" if worker.alive else "it died",
        },
    )
    assert done_at_failover < BEFORE  # the failover happened under load, not after the work was done
    assert lost == []
    assert all(calls.get(t, 0) >= 1 for t in everything)
    assert worker.alive  # the same process followed the new master
    assert "Traceback" not in worker.output
