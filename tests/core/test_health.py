"""`gopherq ping` / `gopherq check` against the test Redis and an unreachable one, and the settings of production
Redis (Sentinel, TLS, ACL user): validated with one-line errors, secrets masked."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gopherq.core.connection import tls_kwargs
from gopherq.core.errors import ConfigError
from gopherq.core.settings import load_settings
from tests.support.common import REPO, free_port, write_config

Run = Callable[..., subprocess.CompletedProcess[str]]


def test_ping_and_check_pass_against_the_test_redis(run_gopherq: Run, redis_url: str, queue_name: str) -> None:
    env = {"GOPHERQ_REDIS__URL": redis_url, "GOPHERQ_QUEUE__NAME": queue_name}
    ping = run_gopherq(["ping"], env=env)
    assert ping.returncode == 0, ping.stderr
    assert ping.stdout.startswith("ok: ") and "scripts loaded" in ping.stdout
    check = run_gopherq(["check", "--json"], env=env)
    assert check.returncode == 0, check.stderr
    report = json.loads(check.stdout)
    assert report["ok"] is True and report["role"] == "master" and report["problems"] == []
    assert report["scripts"] >= 7


def test_check_warns_about_eviction_and_a_missing_append_only_file(
    run_gopherq: Run, private_redis: Callable[..., Any], queue_name: str
) -> None:
    server = private_redis("--maxmemory-policy", "allkeys-lru", "--appendonly", "no")
    env = {"GOPHERQ_REDIS__URL": server.url, "GOPHERQ_QUEUE__NAME": queue_name}
    proc = run_gopherq(["check"], env=env)
    assert proc.returncode == 0, proc.stderr  # risks, not faults: the worker would run
    assert "gopherq: warning: maxmemory-policy is allkeys-lru" in proc.stderr
    assert "gopherq: warning: appendonly is no" in proc.stderr
    ping = run_gopherq(["ping"], env=env)
    assert ping.returncode == 0 and ping.stderr == ""  # a health check stays quiet
    durable = private_redis("--appendonly", "yes")
    quiet = run_gopherq(["check"], env={"GOPHERQ_REDIS__URL": durable.url, "GOPHERQ_QUEUE__NAME": queue_name})
    assert quiet.returncode == 0 and "warning" not in quiet.stderr, quiet.stderr


def test_unreachable_redis_is_one_line_and_status_1(run_gopherq: Run) -> None:
    port = free_port()
    proc = run_gopherq(["ping"], env={"GOPHERQ_REDIS__URL": f"redis://app:hunter2@127.0.0.1:{port}/0"})
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Redis unavailable" in lines[0], proc.stderr
    assert "hunter2" not in proc.stderr


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("sentinels = ['127.0.0.1:26379']\nurl = 'redis://127.0.0.1:6379'", "either sentinels"),
        ("sentinels = ['127.0.0.1']", "expected host:port"),
        ("tls_key_file = 'k.pem'", "needs tls_cert_file"),
    ],
    ids=["sentinels-and-url", "sentinel-without-port", "key-without-cert"],
)
def test_bad_production_settings_are_one_line_errors(run_gopherq: Run, tmp_path: Path, toml: str, message: str) -> None:
    config = write_config(tmp_path, f"[redis]\n{toml}\n")
    proc = run_gopherq(["ping", "-c", str(config)])
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, proc.stderr
    with pytest.raises(ConfigError, match=message):
        load_settings(config, environ={})


def test_config_masks_the_sentinel_password_and_shows_the_rest(run_gopherq: Run, tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        "[redis]\nsentinels = ['127.0.0.1:26379', '127.0.0.1:26380']\nservice_name = 'prod'\nusername = 'gq'\n"
        "password = 'pw-data'\nsentinel_password = 'pw-sentinel'\ntls = true\ntls_ca_file = 'certs/ca.pem'\n",
    )
    proc = run_gopherq(["config", "-c", str(config)])
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)["redis"]
    assert shown["sentinels"] == ["127.0.0.1:26379", "127.0.0.1:26380"]
    assert shown["service_name"] == "prod" and shown["username"] == "gq"
    assert shown["password"] == shown["sentinel_password"] == "**********"
    assert "pw-" not in proc.stdout
    # Certificate paths resolve against the config file's directory, like every relative path in it.
    settings = load_settings(config, environ={})
    assert settings.redis.embedded is False
    assert tls_kwargs(settings)["ssl_ca_certs"] == str((tmp_path / "certs" / "ca.pem").resolve())


def test_sentinel_settings_come_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(
        None, environ={"GOPHERQ_REDIS__SENTINELS": '["a:1", "b:2"]', "GOPHERQ_REDIS__SERVICE_NAME": "svc"}
    )
    assert settings.redis.sentinels == ["a:1", "b:2"] and settings.redis.service_name == "svc"
    assert tls_kwargs(settings) == {}


def test_the_permission_probe_runs_every_command_of_every_script() -> None:
    """A command added to a delivery script must be added to probe.lua too, or a Redis user lacking it would pass
    `gopherq check` and fail halfway through a delivery."""
    lua = REPO / "gopherq" / "core" / "lua"
    calls = re.compile(r"redis\.p?call\(\s*['\"]([A-Za-z]+)['\"]")
    used = {name.upper() for path in lua.glob("*.lua") for name in calls.findall(path.read_text())}
    probed = {name.upper() for name in calls.findall((lua / "probe.lua").read_text())}
    assert used - probed == set(), f"add these commands to gopherq/core/lua/probe.lua: {sorted(used - probed)}"


def test_every_script_sent_to_redis_is_under_32_kib_and_no_lua_file_has_a_block_comment() -> None:
    """Redis keeps an argument of 32 KiB or more in the buffer it arrived in, and a script's cached body is its
    SCRIPT LOAD argument: a bigger script loaded on a connection that had just carried a 100 MB push kept those
    100 MB in the script cache (tests/core/test_hostile_stored.py caught it). load_script empties comment lines, which
    keeps each script under the limit; a --[[ block comment would not survive that."""
    from gopherq.core.scripts import SCRIPT_BYTES_MAX, load_script, script_names

    sizes = {name: len(load_script(name).encode()) for name in script_names()}
    assert max(sizes.values()) <= SCRIPT_BYTES_MAX, sorted(sizes.items(), key=lambda item: -item[1])[:3]
    lua = REPO / "gopherq" / "core" / "lua"
    assert [path.name for path in lua.glob("*.lua") if "--[[" in path.read_text()] == []
