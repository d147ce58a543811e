"""`gopherq run --processes N`: real supervisor and worker subprocesses, real signals, real Redis."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from gopherq.core.keys import QueueKeys
from tests.support.common import wait_until, write_config
from tests.support.workers import FAST_WORKER

pytestmark = pytest.mark.timeout(60)


def config_text(queue: str, redis_url: str | None, extra: str = "") -> str:
    lines = ["[queue]", f'name = "{queue}"', "", "[worker]"]
    lines += [f"{key} = {value}" for key, value in FAST_WORKER.items()]
    if redis_url:
        lines += ["", "[redis]", f'url = "{redis_url}"']
    return "\n".join(lines) + "\n" + extra


def proc_state(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of a live process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    state = proc_state(pid)
    return state is not None and state[0] != "Z"


def worker_pids(client: redis.Redis, queue: str) -> set[int]:
    """Pids of the workers with a heartbeat in `gopherq:{Q}:workers` (worker ids are host:pid:suffix)."""
    return {int(member.decode().split(":")[-2]) for member in client.zrange(QueueKeys(queue).workers, 0, -1)}


def live_children(client: redis.Redis, queue: str, supervisor: int) -> set[int]:
    """Registered workers that are running children of the supervisor."""
    return {pid for pid in worker_pids(client, queue) if alive(pid) and (proc_state(pid) or ("", 0))[1] == supervisor}


@pytest.fixture
def reaper() -> Iterator[set[int]]:
    """Pids seen during a test; any still alive at teardown are killed so no worker outlives its test."""
    seen: set[int] = set()
    yield seen
    for pid in seen:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def registered_children(sync_redis: redis.Redis, queue_name: str, reaper: set[int]) -> Callable[[Any], set[int]]:
    """`registered_children(sup)` waits until both of the supervisor's worker processes have registered and
    returns their pids (killed at teardown if still alive)."""

    def wait(sup: Any) -> set[int]:
        children = wait_until(
            lambda: (found := live_children(sync_redis, queue_name, sup.proc.pid)) and len(found) == 2 and found,
            timeout=20,
            what="two worker processes registered",
        )
        reaper.update(children)
        return set(children)

    return wait


@pytest.fixture
def start_supervisor(
    tmp_path: Path, redis_url: str, queue_name: str, worker_process: Callable[..., Any]
) -> Callable[..., Any]:
    def start(processes: int = 2, extra: str = "", url: str | None = redis_url) -> Any:
        cfg = write_config(tmp_path, config_text(queue_name, url, extra))
        return worker_process(["run", "-c", str(cfg), "--processes", str(processes)])

    return start


def test_children_start_and_sigterm_stops_them_all(
    start_supervisor: Callable[..., Any],
    registered_children: Callable[[Any], set[int]],
    sync_redis: redis.Redis,
    queue_name: str,
) -> None:
    sup = start_supervisor(processes=2)
    children = registered_children(sup)

    sup.signal(signal.SIGTERM)
    assert sup.wait(20) == 0, sup.output
    assert not any(alive(pid) for pid in children)
    assert sup.output.count("received: finishing running tasks") == 2  # each child got the signal once
    assert worker_pids(sync_redis, queue_name) == set()  # both deregistered on a clean shutdown


def test_sigkilled_child_is_restarted(
    start_supervisor: Callable[..., Any],
    registered_children: Callable[[Any], set[int]],
    sync_redis: redis.Redis,
    queue_name: str,
    reaper: set[int],
) -> None:
    sup = start_supervisor(processes=2)
    children = registered_children(sup)
    victim = min(children)
    os.kill(victim, signal.SIGKILL)

    def replaced() -> set[int]:
        found = live_children(sync_redis, queue_name, sup.proc.pid)
        return found if len(found) == 2 and victim not in found else set()

    now = wait_until(replaced, timeout=20, what="a new worker process in place of the killed one")
    reaper.update(now)
    assert now - children, "the killed child was not replaced"
    assert "died unexpectedly (killed by SIGKILL)" in sup.output

    sup.signal(signal.SIGTERM)
    assert sup.wait(20) == 0, sup.output
    assert not any(alive(pid) for pid in now)


def test_sigtstp_is_forwarded_to_every_child(
    start_supervisor: Callable[..., Any], registered_children: Callable[[Any], set[int]]
) -> None:
    sup = start_supervisor(processes=2)
    children = registered_children(sup)

    sup.signal(signal.SIGTSTP)
    wait_until(lambda: sup.output.count("is quiet: no new tasks will be fetched") == 2, what="both children quiet")
    assert sup.proc.poll() is None  # the supervisor itself is not stopped by SIGTSTP
    assert all(alive(pid) for pid in children)

    sup.signal(signal.SIGTERM)
    assert sup.wait(20) == 0, sup.output


def test_children_stop_by_themselves_when_the_supervisor_is_killed(
    start_supervisor: Callable[..., Any],
    registered_children: Callable[[Any], set[int]],
    sync_redis: redis.Redis,
    queue_name: str,
) -> None:
    sup = start_supervisor(processes=2)
    children = registered_children(sup)

    os.kill(sup.proc.pid, signal.SIGKILL)  # the supervisor only: children run in their own sessions
    sup.wait(10)
    wait_until(lambda: not any(alive(pid) for pid in children), timeout=20, what="orphaned children to exit")
    wait_until(lambda: not worker_pids(sync_redis, queue_name), what="children to deregister (graceful exit)")


def test_a_child_that_cannot_start_stops_the_supervisor_with_status_2(
    start_supervisor: Callable[..., Any],
) -> None:
    sup = start_supervisor(processes=2, extra="\n[plugins.no_such_plugin]\nx = 1\n")
    assert sup.wait(30) == 2, sup.output
    assert "no loaded plugin has settings named 'no_such_plugin'" in sup.output
    assert "restarting" not in sup.output


def test_embedded_redis_outlives_a_dead_child_and_stops_with_the_supervisor(
    tmp_path: Path,
    start_supervisor: Callable[..., Any],
    queue_name: str,
    reaper: set[int],
    request: pytest.FixtureRequest,
) -> None:
    from gopherq.core.embedded import EmbeddedRedis

    embedded = EmbeddedRedis((tmp_path / ".gopherq").resolve())
    request.addfinalizer(embedded.stop)  # a failed test must not leave the server running
    sup = start_supervisor(processes=2, url=None)
    wait_until(embedded.is_running, timeout=20, what="the embedded redis-server")
    client = redis.Redis(unix_socket_path=str(embedded.socket))
    try:
        children = wait_until(
            lambda: (found := live_children(client, queue_name, sup.proc.pid)) and len(found) == 2 and found,
            timeout=20,
            what="two worker processes registered on the embedded server",
        )
        reaper.update(children)
        victim = min(children)
        os.kill(victim, signal.SIGKILL)

        def replaced() -> set[int]:
            found = live_children(client, queue_name, sup.proc.pid)
            return found if len(found) == 2 and victim not in found else set()

        reaper.update(wait_until(replaced, timeout=20, what="the killed child replaced"))
        assert embedded.is_running()
    finally:
        client.close()

    sup.signal(signal.SIGTERM)
    assert sup.wait(20) == 0, sup.output
    assert not embedded.is_running(), "the last one out (the supervisor) should stop the embedded server"
