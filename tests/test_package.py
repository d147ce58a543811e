"""The published package: `python -m build` makes a wheel and an sdist that carry what GoPherQ needs at run time
(the Lua scripts, py.typed), and the wheel, installed into a fresh venv outside the checkout, runs a worker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import redis

import gopherq
from gopherq.core.keys import QueueKeys
from tests.support.common import REPO, cli_env, wait_until
from tests.support.loopback import LoopbackServer


def build(tmp_path: Path) -> tuple[Path, Path]:
    dist = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = dist.glob("gopherq-*.whl")
    (sdist,) = dist.glob("gopherq-*.tar.gz")
    return wheel, sdist


@pytest.mark.chaos
def test_the_wheel_runs_a_worker_from_a_fresh_venv_outside_the_checkout(
    tmp_path: Path, redis_url: str, queue_name: str, loopback: LoopbackServer
) -> None:
    wheel, sdist = build(tmp_path)
    version = gopherq.__version__
    assert wheel.name == f"gopherq-{version}-py3-none-any.whl" and sdist.name == f"gopherq-{version}.tar.gz"
    scripts = sorted(path.name for path in (REPO / "gopherq" / "core" / "lua").glob("*.lua"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"gopherq-{version}.dist-info/METADATA").decode()
    assert {f"gopherq/core/lua/{name}" for name in scripts} <= names
    assert "gopherq/py.typed" in names
    # Every file of the package in the checkout is in the wheel (the dashboard's static files and templates too).
    package = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "gopherq").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert package - names == set()
    assert not any(name.startswith(("tests/", "bench/")) for name in names)
    assert "Provides-Extra: embedded" in metadata and "Provides-Extra: docs" in metadata
    assert "Classifier: Typing :: Typed" in metadata
    with tarfile.open(sdist) as archive:
        members = {Path(name).relative_to(f"gopherq-{version}").as_posix() for name in archive.getnames()[1:]}
    assert {"CHANGELOG.md", "gopherq.toml", "docs/deployment.md", "Dockerfile", "compose.yaml"} <= members

    # A fresh venv outside the checkout, the wheel and its dependencies from the package index (or pip's cache).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # As the Dockerfile installs it: with the `fast` extra, binary wheels only (the image has no compiler).
    pip = [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "--only-binary=:all:"]
    install = subprocess.run([*pip, f"{wheel}[fast]"], capture_output=True, text=True, timeout=600, env=cli_env())
    if install.returncode != 0 and "Could not find a version" in install.stderr + install.stdout:
        pytest.skip(f"the package index is unreachable, dependencies cannot be installed: {install.stderr[-300:]}")
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    gq = str(venv / "bin" / "gopherq")
    env = cli_env({"GOPHERQ_REDIS__URL": redis_url, "GOPHERQ_QUEUE__NAME": queue_name})
    outside = tmp_path / "elsewhere"
    outside.mkdir()

    shown = subprocess.run([gq, "--version"], capture_output=True, text=True, cwd=outside, env=env, timeout=60)
    assert shown.returncode == 0 and version in shown.stdout, shown.stderr
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import gopherq.core.broker as b; print(b.__file__)"],
        capture_output=True, text=True, cwd=outside, env=env, timeout=60,
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr
    ping = subprocess.run([gq, "ping"], capture_output=True, text=True, cwd=outside, env=env, timeout=60)
    assert ping.returncode == 0, ping.stderr

    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen([gq, "run"], cwd=outside, env=env, stdout=log, stderr=subprocess.STDOUT)
    client = redis.Redis.from_url(redis_url)
    try:
        seed = {"id": "from-wheel", "method": "GET", "url": loopback.url("/ok"), "header": {}, "body": ""}
        client.rpush(queue_name, json.dumps(seed))
        raw = wait_until(lambda: client.get(QueueKeys(queue_name).result("from-wheel")), timeout=60, what="the result")
        assert json.loads(raw)["status"] == "succeeded"
        assert loopback.count("from-wheel") == 1
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        client.close()
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        log.close()
