"""Shared pieces of the chaos tests: worker subprocesses on one config file, Redis-side tallies, and printed
figures (run with `-s` to see them)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from gopherq.core.keys import QueueKeys
from tests.support.common import GOPHERQ, write_config

#: A worker subprocess that registers an executor of type `crash` which kills its own process, every time.
CRASH_WORKER = """
import os
import sys

from gopherq import hookimpl, load_settings
from gopherq.core.runner import configure_logging, run_worker


class Crash:
    async def execute(self, task, context):
        os._exit(1)


class CrashPlugin:
    @hookimpl
    def gopherq_register_executors(self, register, settings):
        register("crash", Crash())


settings = load_settings(sys.argv[1])
configure_logging(settings.logging.level)
sys.exit(run_worker(settings, extra_plugins={"crash": CrashPlugin()}))
"""


def chaos_config(
    directory: Path,
    redis_url: str,
    queue: str,
    *,
    worker: dict[str, Any] | None = None,
    queue_settings: dict[str, Any] | None = None,
    events: tuple[str, ...] = ("task.recovered", "task.dead_lettered", "task.retrying", "worker.*"),
) -> Path:
    """A TOML config for the worker subprocesses: short leases so recovery happens within a test's lifetime."""
    timings = {"lease_timeout": 2.0, "heartbeat_interval": 0.5, "reaper_interval": 0.5, "promote_interval": 0.1}
    timings.update(worker or {})

    def table(values: dict[str, Any]) -> str:
        return "\n".join(f"{key} = {value!r}" for key, value in values.items())

    text = (
        f'[redis]\nurl = "{redis_url}"\n'
        f'[queue]\nname = "{queue}"\n{table(queue_settings or {})}\n'
        f"[worker]\n{table(timings)}\n"
        '[logging]\nlevel = "INFO"\n'
        f"[plugins.logging]\nevents = {list(events)!r}\n"
    )
    return write_config(directory, text.replace("'", '"'))


class Proc:
    """One worker subprocess in its own session, its output in a log file."""

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            command, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.pid = self.proc.pid

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(10)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        if self.alive:
            self.signal(signal.SIGCONT)
            self.kill()
        self._log.close()


class Fleet:
    """Starts worker subprocesses (`gopherq run -c config`, or a script given the config path) and kills
    whatever is left at teardown."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: list[Proc] = []
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("GOPHERQ_", "REDIS_", "QUEUE_NAME", "NUM_WORKERS"))
        }

    def start(self, config: Path, script: Path | None = None) -> Proc:
        command = [sys.executable, str(script), str(config)] if script else [GOPHERQ, "run", "-c", str(config)]
        proc = Proc(command, self.directory / f"worker-{len(self.procs)}.log", self.env)
        self.procs.append(proc)
        return proc

    def outputs(self) -> str:
        return "\n".join(proc.output for proc in self.procs)

    def close(self) -> None:
        for proc in self.procs:
            proc.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    running = Fleet(tmp_path)
    yield running
    running.close()


def queue_stats(client: redis.Redis, queue: str) -> dict[str, int]:
    """The queue's counters (settle outcomes, refused acks, recoveries, ...) kept by the Lua scripts."""
    return {key.decode(): int(value) for key, value in client.hgetall(QueueKeys(queue).stats).items()}


def queue_sizes(client: redis.Redis, queue: str) -> dict[str, int]:
    keys = QueueKeys(queue)
    with client.pipeline(transaction=False) as pipe:
        pipe.llen(keys.ready)
        pipe.hlen(keys.inflight)
        pipe.zcard(keys.delayed)
        pipe.zcard(keys.dead_index)
        ready, inflight, delayed, dead = pipe.execute()
    return {"ready": ready, "inflight": inflight, "delayed": delayed, "dead": dead}


def results(client: redis.Redis, queue: str, task_ids: list[str]) -> dict[str, dict[str, Any] | None]:
    """The result record of each task (None when it has none)."""
    import json

    keys = QueueKeys(queue)
    out: dict[str, dict[str, Any] | None] = {}
    for start in range(0, len(task_ids), 500):
        chunk = task_ids[start : start + 500]
        for task_id, raw in zip(chunk, client.mget([keys.result(t) for t in chunk]), strict=True):
            out[task_id] = None if raw is None else json.loads(raw)
    return out


def print_figures(title: str, figures: dict[str, Any]) -> None:
    """The numbers a chaos test measured, for the lead to quote (visible with `pytest -s`)."""
    width = max(len(name) for name in figures)
    print(f"\n== chaos: {title}")
    for name, value in figures.items():
        shown = f"{value:.2f}" if isinstance(value, float) else value
        print(f"   {name:<{width}}  {shown}")
