"""The real `gopherq` command in subprocesses: settings precedence and every error path (exit 2, one line naming
the key and the file), `config`, `plugins`, `enqueue`, `result`, `run` flags, and Redis being unreachable."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from pytest_httpserver import HTTPServer

from gopherq.core import codec
from gopherq.core.keys import QueueKeys
from tests.support.common import wait_until, write_config

Run = Callable[..., subprocess.CompletedProcess[str]]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_one_line_error(proc: subprocess.CompletedProcess[str], status: int, *parts: str) -> str:
    """The command failed with `status` and said so in one line on stderr, naming each of `parts`."""
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("gopherq: error: "), line
    for part in parts:
        assert part in line, (part, line)
    return line


# -- settings errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "text", "env", "parts"),
    [
        pytest.param("run", None, {}, ["missing.toml", "config file not found"], id="missing-file"),
        pytest.param("run", "[worker\nconcurrency = 3\n", {}, ["gopherq.toml", "invalid TOML"], id="invalid-toml"),
        pytest.param(
            "run",
            "[worker]\nconcurency = 3\n",
            {},
            ["gopherq.toml", "worker.concurency", "unknown key", "did you mean 'worker.concurrency'?"],
            id="unknown-key",
        ),
        pytest.param(
            "run",
            "[worker]\nconcurrency = 'many'\n",
            {},
            ["gopherq.toml", "worker.concurrency", "valid integer", "'many'"],
            id="wrong-type",
        ),
        pytest.param(
            "config",
            "[plugins.http]\nbody_limt = 1\n",
            {},
            ["gopherq.toml", "plugins.http.body_limt", "did you mean 'plugins.http.body_limit'?"],
            id="unknown-plugin-key",
        ),
        pytest.param(
            "run",
            "[worker]\nconcurrency = 4\n",
            {"GOPHERQ_WORKER__CONCURRENCY": "lots"},
            ["environment variable GOPHERQ_WORKER__CONCURRENCY", "worker.concurrency", "'lots'"],
            id="env-wrong-type",
        ),
        pytest.param(
            "run",
            "",
            {"GOPHERQ_QUEUE__NAM": "x"},
            ["environment variable GOPHERQ_QUEUE__NAM", "queue.nam", "did you mean 'queue.name'?"],
            id="env-unknown-key",
        ),
        pytest.param(
            "config",
            "",
            {"NUM_WORKERS": "x"},
            ["environment variable NUM_WORKERS", "worker.concurrency", "'x'"],
            id="seed-var-wrong-type",
        ),
    ],
)
def test_settings_errors_exit_2_with_one_line(
    run_gopherq: Run, tmp_path: Path, command: str, text: str | None, env: dict[str, str], parts: list[str]
) -> None:
    config = "missing.toml" if text is None else str(write_config(tmp_path, text))
    proc = run_gopherq([command, "-c", config], env=env)
    assert_one_line_error(proc, 2, *parts)


def test_run_with_a_bad_concurrency_flag_exits_2(run_gopherq: Run, tmp_path: Path) -> None:
    proc = run_gopherq(["run", "-c", str(write_config(tmp_path, "")), "--concurrency", "0"])
    assert_one_line_error(proc, 2, "command line", "worker.concurrency")


# -- config and plugins ----------------------------------------------------------------------------------------


def test_config_prints_effective_settings_with_precedence_and_masked_secrets(run_gopherq: Run, tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        "[redis]\naddress = '127.0.0.1:6390'\npassword = 'file-secret'\n"
        "[worker]\nconcurrency = 4\ntask_timeout = 9.0\n[queue]\nname = 'file_queue'\n",
    )
    env = {
        "NUM_WORKERS": "5",
        "GOPHERQ_WORKER__CONCURRENCY": "6",
        "QUEUE_NAME": "seed_queue",
        "REDIS_PASSWORD": "env-secret",
        "GOPHERQ_PLUGINS__HTTP__BODY_LIMIT": "1024",
    }
    proc = run_gopherq(["config", "-c", str(config)], env=env)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["worker"]["concurrency"] == 6  # GOPHERQ_* over NUM_WORKERS over the file
    assert shown["worker"]["task_timeout"] == 9.0  # file
    assert shown["queue"]["name"] == "seed_queue"  # seed variable over the file
    assert shown["redis"]["address"] == "127.0.0.1:6390"
    assert shown["redis"]["password"] == "**********"
    assert shown["plugins"]["http"]["body_limit"] == 1024
    assert shown["worker"]["shutdown_timeout"] == 25.0  # default
    assert "file-secret" not in proc.stdout and "env-secret" not in proc.stdout


def test_config_masks_the_password_in_a_redis_url(run_gopherq: Run) -> None:
    proc = run_gopherq(["config"], env={"GOPHERQ_REDIS__URL": "redis://app:topsecret@127.0.0.1:6379/0"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["redis"]["url"] == "redis://app:**********@127.0.0.1:6379/0"
    assert "topsecret" not in proc.stdout


def test_plugins_lists_the_built_ins_and_what_they_register(run_gopherq: Run) -> None:
    text = run_gopherq(["plugins"])
    assert text.returncode == 0, text.stderr
    assert "http" in text.stdout and "logging" in text.stdout
    proc = run_gopherq(["plugins", "--json"])
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert rows["http"]["executors"] == ["http"]
    assert rows["http"]["distribution"] == "gopherq"
    assert rows["logging"]["sinks"] == ["logging"]
    assert rows["http"]["builtin"] and rows["logging"]["builtin"]


# -- a worker with enqueue and result ----------------------------------------------------------------------------


def test_run_enqueue_result_against_a_worker(
    run_gopherq: Run,
    worker_process: Callable[..., Any],
    tmp_path: Path,
    redis_url: str,
    queue_name: str,
    httpserver: HTTPServer,
    sync_redis: redis.Redis,
) -> None:
    httpserver.expect_request("/hook", method="POST").respond_with_json({"got": "it"})
    httpserver.expect_request("/gone").respond_with_data("gone", status=410)
    # The file names another queue and concurrency: the flags must win over the file and the environment.
    config = str(write_config(tmp_path, f"[redis]\nurl = '{redis_url}'\n[queue]\nname = 'not_this_one'\n"))
    worker = worker_process(
        ["run", "-c", config, "--queue", queue_name, "--concurrency", "3"],
        env={"NUM_WORKERS": "7", "GOPHERQ_WORKER__CONCURRENCY": "9"},
    )
    wait_until(lambda: "started: queue" in worker.output, what="the worker to start")
    assert f"started: queue {queue_name}, concurrency 3," in worker.output

    proc = run_gopherq(
        [
            "enqueue", "-c", config, "--queue", queue_name, "--url", httpserver.url_for("/hook"), "-X", "POST",
            "-H", "X-Custom-Header: GoPherQTest", "--header", "X-Other:  two words ", "--json-body", '{"a": [1]}',
            "--id", "cli-task-1", "--wait", "20",
        ]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    first, _, rest = proc.stdout.partition("\n")
    assert first == "cli-task-1"
    record = json.loads(rest)
    assert record["status"] == "succeeded"
    assert json.loads(record["result"]["body"]) == {"got": "it"}
    request = next(req for req, _ in httpserver.log if req.path == "/hook")
    assert request.headers["X-Custom-Header"] == "GoPherQTest"
    assert request.headers["X-Other"] == "two words"
    assert request.headers["Idempotency-Key"] == "cli-task-1"
    assert json.loads(request.get_data()) == {"a": [1]}

    shown = run_gopherq(["result", "-c", config, "--queue", queue_name, "cli-task-1"])
    assert shown.returncode == 0, shown.stderr
    first, _, body = shown.stdout.partition("\n")
    assert first == "cli-task-1: succeeded after 1 attempt(s) - HTTP 200"
    assert json.loads(body) == {"got": "it"}  # the response body
    as_json = run_gopherq(["result", "-c", config, "-q", queue_name, "cli-task-1", "--json"])
    assert json.loads(as_json.stdout)["result"]["status_code"] == 200

    # --wait on a task that fails prints its record and exits 1; `result` of a finished, failed task exits 0.
    proc = run_gopherq(
        ["enqueue", "-c", config, "-q", queue_name, "--url", httpserver.url_for("/gone"), "--wait", "20"]
    )
    assert proc.returncode == 1, proc.stderr
    task_id, _, rest = proc.stdout.partition("\n")
    assert json.loads(rest)["error"]["reason"] == "http_status"
    failed = run_gopherq(["result", "-c", config, "-q", queue_name, task_id])
    assert failed.returncode == 0, failed.stderr
    assert f"{task_id}: dead after 1 attempt(s) - http_status:" in failed.stdout

    # Without --wait only the id is printed; --body is sent as is.
    proc = run_gopherq(
        ["enqueue", "-c", config, "-q", queue_name, "--url", httpserver.url_for("/hook"), "-X", "POST", "--body", "a=b"]
    )
    assert proc.returncode == 0, proc.stderr
    task_id = proc.stdout.strip()
    assert len(task_id) >= 16 and "\n" not in task_id
    wait_until(lambda: sync_redis.exists(QueueKeys(queue_name).result(task_id)), what="its result")
    request = next(req for req, _ in httpserver.log if req.headers.get("Idempotency-Key") == task_id)
    assert request.get_data() == b"a=b"

    worker.signal(signal.SIGINT)  # SIGINT is as graceful as SIGTERM
    assert worker.wait(30) == 0
    assert "Traceback" not in worker.output


def test_result_of_unknown_or_unfinished_tasks_exits_1(
    run_gopherq: Run, tmp_path: Path, redis_url: str, queue_name: str, sync_redis: redis.Redis
) -> None:
    config = str(write_config(tmp_path, f"[redis]\nurl = '{redis_url}'\n[queue]\nname = '{queue_name}'\n"))
    unknown = run_gopherq(["result", "-c", config, "no-such-task"])
    assert_one_line_error(unknown, 1, "no-such-task")
    retrying = {
        "id": "later",
        "queue": queue_name,
        "type": "http",
        "status": "retrying",
        "attempts": 1,
        "error": {"reason": "http_status", "message": "HTTP 503"},
        "retry_at": 2_000_000_000.0,
    }
    sync_redis.set(QueueKeys(queue_name).result("later"), codec.dumps(retrying), ex=60)
    proc = run_gopherq(["result", "-c", config, "later"])
    assert proc.returncode == 1
    assert proc.stdout.startswith("later: retrying after 1 attempt(s) - http_status: HTTP 503")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--url", "ftp://127.0.0.1/"], "schema_invalid"),
        (["--url", "http://127.0.0.1/", "-X", "BREW"], "method"),
        (["--url", "http://127.0.0.1/", "--header", "no colon"], "Name: value"),
        (["--url", "http://127.0.0.1/", "--body", "a", "--json-body", "{}"], "not both"),
        (["--url", "http://127.0.0.1/", "--json-body", "{nope"], "JSON"),
    ],
)
def test_enqueue_refuses_bad_input_with_status_2(
    run_gopherq: Run, tmp_path: Path, redis_url: str, queue_name: str, args: list[str], says: str
) -> None:
    config = str(write_config(tmp_path, f"[redis]\nurl = '{redis_url}'\n[queue]\nname = '{queue_name}'\n"))
    proc = run_gopherq(["enqueue", "-c", config, *args])
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert says in proc.stderr
    assert "Traceback" not in proc.stderr
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.llen(queue_name) == 0
    finally:
        client.close()


# -- Redis unreachable ------------------------------------------------------------------------------------------


def test_unreachable_redis_is_one_line_for_commands_and_a_retry_loop_for_the_worker(
    run_gopherq: Run, worker_process: Callable[..., Any]
) -> None:
    env = {"REDIS_ADDRESS": f"127.0.0.1:{closed_port()}"}
    worker = worker_process(["run"], env=env)
    proc = run_gopherq(["enqueue", "--url", "http://127.0.0.1:9/"], env=env)
    assert_one_line_error(proc, 1, "Redis unavailable")
    wait_until(lambda: "Redis unavailable" in worker.output, what="the worker's warning")
    assert worker.proc.poll() is None  # still trying
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert "Traceback" not in worker.output
