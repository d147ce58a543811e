"""A TLS-only redis-server (mutual TLS, a CA made by the test) with the ACL users of docs/deployment.md: a worker
configured from the docs alone runs tasks; a user that lacks one permission gets one clear line, not a hang."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from gopherq import Client
from gopherq.core.settings import load_settings
from tests.support.common import free_port, wait_until, write_config
from tests.support.loopback import LoopbackServer

#: The ACL rule of docs/deployment.md, for queue `{queue}`.
GOPHERQ_RULES = (
    "resetkeys ~{queue} ~gopherq:{{{queue}}}:* resetchannels "
    "-@all +@connection +@read +@write +@scripting -@dangerous +info +config|get"
)

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None or shutil.which("redis-server") is None,
    reason="needs the openssl CLI and redis-server (apt-get install openssl redis-server)",
)


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA, and a server and a client certificate it signed (for 127.0.0.1), made with the openssl CLI."""
    paths = {
        name: directory / f"{name}.pem" for name in ("ca", "ca-key", "server", "server-key", "client", "client-key")
    }

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=GoPherQ test CA",
            "-keyout", str(paths["ca-key"]), "-out", str(paths["ca"]))  # fmt: skip
    for name, extension in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "")):
        csr = directory / f"{name}.csr"
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", str(paths[f"{name}-key"]), "-out", str(csr))  # fmt: skip
        ext = directory / f"{name}.ext"
        ext.write_text(extension + "\n" if extension else "basicConstraints=CA:FALSE\n")
        openssl("x509", "-req", "-in", str(csr), "-CA", str(paths["ca"]), "-CAkey", str(paths["ca-key"]),
                "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(paths[name]))  # fmt: skip
    return paths


class TlsRedis:
    """A redis-server listening on TLS only, requiring client certificates, with users `admin`, `gopherq` (the
    documented rules), `nolua` (the same minus EVALSHA) and `otherkeys` (the rules for another queue)."""

    def __init__(self, directory: Path, queue: str) -> None:
        self.directory = directory
        self.port = free_port()
        self.certs = make_certificates(directory)
        rules = GOPHERQ_RULES.format(queue=queue)
        (directory / "redis.conf").write_text(
            f"port 0\nbind 127.0.0.1\ntls-port {self.port}\n"
            f"tls-cert-file {self.certs['server']}\ntls-key-file {self.certs['server-key']}\n"
            f"tls-ca-cert-file {self.certs['ca']}\ntls-auth-clients yes\n"
            f'save ""\ndir {directory}\nlogfile {directory / "redis.log"}\n'
            "user default off\n"
            "user admin on >admin-pw ~* &* +@all\n"
            f"user gopherq on >gopherq-pw {rules}\n"
            f"user nolua on >nolua-pw {rules} -evalsha\n"
            f"user otherkeys on >other-pw {GOPHERQ_RULES.format(queue='another_queue')}\n"
        )
        self.proc = subprocess.Popen(
            ["redis-server", str(directory / "redis.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        admin = self.client("admin", "admin-pw")
        try:
            wait_until(lambda: _answers(admin), timeout=15, what="the TLS redis-server")
        finally:
            admin.close()

    def client(self, user: str, password: str) -> redis.Redis:
        return redis.Redis(
            port=self.port, username=user, password=password, ssl=True, ssl_ca_certs=str(self.certs["ca"]),
            ssl_certfile=str(self.certs["client"]), ssl_keyfile=str(self.certs["client-key"]), socket_timeout=5,
        )  # fmt: skip

    def config(self, user: str, password: str, queue: str) -> str:
        """A gopherq.toml as docs/deployment.md shows it (certificate paths relative to the file)."""
        return (
            f"[redis]\naddress = '127.0.0.1:{self.port}'\nusername = '{user}'\npassword = '{password}'\n"
            "tls = true\ntls_ca_file = 'ca.pem'\ntls_cert_file = 'client.pem'\ntls_key_file = 'client-key.pem'\n"
            f"[queue]\nname = '{queue}'\n[worker]\nshutdown_timeout = 5.0\n"
        )

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.ConnectionError, OSError):
        return False


@pytest.fixture
def tls_redis(tmp_path: Path, queue_name: str) -> Iterator[TlsRedis]:
    server = TlsRedis(tmp_path, queue_name)
    yield server
    server.stop()


def test_plain_connections_are_refused(tls_redis: TlsRedis) -> None:
    plain = redis.Redis(port=tls_redis.port, username="gopherq", password="gopherq-pw", socket_timeout=3)
    with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
        plain.ping()
    plain.close()


def test_worker_runs_tasks_over_tls_as_the_documented_acl_user(
    tls_redis: TlsRedis,
    tmp_path: Path,
    queue_name: str,
    loopback: LoopbackServer,
    worker_process: Callable[..., Any],
    run_gopherq: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    config = write_config(tmp_path, tls_redis.config("gopherq", "gopherq-pw", queue_name))
    checked = run_gopherq(["check", "-c", str(config)])
    assert checked.returncode == 0, checked.stderr
    assert "ok: 127.0.0.1" in checked.stdout and "master" in checked.stdout

    worker = worker_process(["run", "-c", str(config)])
    wait_until(lambda: f"started: queue {queue_name}" in worker.output, timeout=30, what="the worker to start")
    with Client(load_settings(config, environ={})) as client:
        ids = [client.enqueue_http(loopback.url("/ok")) for _ in range(20)]
        for task_id in ids:
            result = client.wait(task_id, timeout=30)
            assert result is not None and result.status == "succeeded", (task_id, worker.output)
    assert all(loopback.count(task_id) == 1 for task_id in ids)
    # The password never reaches the worker's log.
    assert "gopherq-pw" not in worker.output


@pytest.mark.parametrize(
    ("user", "password", "missing"),
    [("nolua", "nolua-pw", "evalsha"), ("otherkeys", "other-pw", "key")],
    ids=["no-evalsha", "other-queue-keys"],
)
def test_a_user_lacking_a_permission_gets_one_clear_line(
    tls_redis: TlsRedis,
    tmp_path: Path,
    queue_name: str,
    run_gopherq: Callable[..., subprocess.CompletedProcess[str]],
    worker_process: Callable[..., Any],
    user: str,
    password: str,
    missing: str,
) -> None:
    config = write_config(tmp_path, tls_redis.config(user, password, queue_name))
    for command in ("ping", "check"):
        proc = run_gopherq([command, "-c", str(config)])
        assert proc.returncode == 1, proc.stdout
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert "lacks a permission GoPherQ needs" in lines[0] and missing in lines[0].lower(), lines[0]
        assert password not in proc.stderr
    # A worker started as that user stops at once with the same reason, instead of retrying forever.
    worker = worker_process(["run", "-c", str(config)])
    assert worker.wait(30) == 1
    assert "lacks a permission GoPherQ needs" in worker.output


def test_a_wrong_ca_is_refused_with_a_clear_line(
    tls_redis: TlsRedis, tmp_path: Path, queue_name: str, run_gopherq: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    make_certificates(other)
    text = tls_redis.config("gopherq", "gopherq-pw", queue_name).replace("'ca.pem'", "'other/ca.pem'")
    proc = run_gopherq(["ping", "-c", str(write_config(tmp_path, text))])
    assert proc.returncode == 1
    assert "certificate verify failed" in proc.stderr.lower(), proc.stderr


def test_a_rediss_url_works_as_well(
    tls_redis: TlsRedis, tmp_path: Path, queue_name: str, run_gopherq: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    text = (
        f"[redis]\nurl = 'rediss://gopherq:gopherq-pw@127.0.0.1:{tls_redis.port}/0'\ntls_ca_file = 'ca.pem'\n"
        f"tls_cert_file = 'client.pem'\ntls_key_file = 'client-key.pem'\n[queue]\nname = '{queue_name}'\n"
    )
    proc = run_gopherq(["check", "-c", str(write_config(tmp_path, text))])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok: rediss://gopherq:") and "gopherq-pw" not in proc.stdout


def test_sentinel_over_tls_names_the_tls_master(
    tls_redis: TlsRedis,
    tmp_path: Path,
    queue_name: str,
    loopback: LoopbackServer,
    run_gopherq: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    """With `tls = true` and `sentinels`, both the Sentinel and the master it names are reached over TLS."""
    port, certs = free_port(), tls_redis.certs
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port 0\nbind 127.0.0.1\ntls-port {port}\ntls-cert-file {certs['server']}\n"
        f"tls-key-file {certs['server-key']}\ntls-ca-cert-file {certs['ca']}\ntls-auth-clients yes\n"
        f"tls-replication yes\ndir {tmp_path}\nlogfile {tmp_path / 'sentinel.log'}\n"
        f"sentinel monitor tlsmaster 127.0.0.1 {tls_redis.port} 1\n"
        "sentinel auth-user tlsmaster admin\nsentinel auth-pass tlsmaster admin-pw\n"
    )
    sentinel = subprocess.Popen(
        ["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        text = tls_redis.config("gopherq", "gopherq-pw", queue_name).replace(
            f"address = '127.0.0.1:{tls_redis.port}'", f"sentinels = ['127.0.0.1:{port}']\nservice_name = 'tlsmaster'"
        )
        config = write_config(tmp_path, text)

        def checked() -> bool:
            return run_gopherq(["check", "-c", str(config)]).returncode == 0

        wait_until(checked, timeout=30, interval=0.5, what="gopherq check through the TLS Sentinel")
        with Client(load_settings(config, environ={})) as client:
            task_id = client.enqueue_http(loopback.url("/ok"))
        admin = tls_redis.client("admin", "admin-pw")
        try:
            assert admin.llen(queue_name) == 1  # the task reached the TLS master the Sentinel named
        finally:
            admin.close()
        assert task_id
    finally:
        sentinel.terminate()
        sentinel.wait(10)
