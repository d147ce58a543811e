"""What got in a plugin author's way (issue 21): each bug a new user hit, fixed at its root and pinned here."""

from __future__ import annotations

import asyncio
import importlib.metadata as metadata
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from gopherq import App, Client, Event, ExecutionContext, Task, TaskRejected, hookimpl
from gopherq.core.plugins import BUILTINS, load_plugins
from gopherq.core.settings import load_settings
from gopherq.core.task import RetryBackoff, TaskStatus, parse_backoff, task_from_dict
from gopherq.testing import PluginHarness, RedisQueue, make_event
from tests.support.common import REPO, write_config
from tests.support.plugins import ExecutorPlugin, NoopExecutor

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# -- the list of built-in plugins -------------------------------------------------------------------------------------


def test_the_builtin_list_is_exactly_the_entry_points_the_package_declares() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["gopherq"]
    assert BUILTINS == declared
    installed = {ep.name: ep.value for ep in metadata.distribution("gopherq").entry_points if ep.group == "gopherq"}
    assert installed == declared


def test_pinning_third_party_plugins_keeps_the_functions_plugin() -> None:
    settings = load_settings(None, {"plugins": {"load": []}}, environ={})
    manager = load_plugins(settings)
    assert "function" in manager.executors
    assert manager.info["functions"].builtin
    harness = PluginHarness(load=[])
    assert "function" in harness.plugins.executors


# -- backoff: one accepted shape set on every path ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"min": 1, "max": 5}, RetryBackoff(1.0, 5.0)),
        ({"max": 5}, RetryBackoff(1.0, 5.0)),
        ((0.5, 2), RetryBackoff(0.5, 2.0)),
        ([0.5, 2], RetryBackoff(0.5, 2.0)),
        (RetryBackoff(3, 4), RetryBackoff(3.0, 4.0)),
        (None, None),
    ],
)
def test_backoff_shapes_are_the_same_for_every_entry_point(given: Any, expected: RetryBackoff | None) -> None:
    assert parse_backoff(given) == expected
    if not isinstance(given, (RetryBackoff, tuple)):  # JSON has no tuple and no RetryBackoff: the rest travel raw too
        assert task_from_dict({"id": "t", "backoff": given}).backoff == expected


@pytest.mark.parametrize("given", [{"min": 5, "max": 1}, {"min": "1"}, {"low": 1}, [1], [1, 2, 3], "1-5", -1])
def test_a_bad_backoff_is_refused_showing_what_was_given(given: Any) -> None:
    with pytest.raises(TaskRejected) as raised:
        parse_backoff(given)
    assert raised.value.reason == "schema_invalid"
    assert f"got {given!r}" in raised.value.message


def test_the_client_and_functions_accept_the_documented_backoff_dict(make_settings: Callable[..., Any]) -> None:
    settings = make_settings()
    with Client(settings) as client:
        task = client.task("http", url="http://127.0.0.1:9/", backoff={"min": 1, "max": 5})
        assert task.backoff == RetryBackoff(1.0, 5.0)
        assert json.loads(task.envelope or b"")["backoff"] == {"min": 1.0, "max": 5.0}
        with pytest.raises(TaskRejected, match=r"got \{'min': 9, 'max': 1\}"):
            client.task("http", url="http://127.0.0.1:9/", backoff={"min": 9, "max": 1})
    app = App(settings)
    try:

        @app.task(backoff={"min": 1, "max": 5})
        def noop() -> None:
            return None

        handle = noop.enqueue()
        assert handle.id
    finally:
        app.close()


# -- the dashboard's task page names the task's real type ------------------------------------------------------------


async def test_a_finished_task_keeps_its_type_in_the_inspection(gopherq_queue: RedisQueue) -> None:
    async with gopherq_queue.worker({"sqlish": ExecutorPlugin("sql", NoopExecutor())}) as running:
        task_id = await running.client.enqueue("sql")
        assert await running.client.wait(task_id, timeout=15)
        info = await running.client.inspect.task(gopherq_queue.name, task_id)
    assert info is not None and info.state == "succeeded" and info.envelope is None
    assert info.type == "sql"
    assert info.to_dict()["type"] == "sql"


async def test_the_dashboards_task_page_shows_the_type_of_a_finished_task(
    make_settings: Callable[..., Any], aredis: Any, start_worker: Any
) -> None:
    from aiohttp import ClientSession
    from aiohttp.test_utils import TestServer

    from gopherq import AsyncClient
    from gopherq.web import create_app

    settings = make_settings()
    worker = await start_worker(settings, {"sqlish": ExecutorPlugin("sql", NoopExecutor())})
    async with AsyncClient(settings, plugins=worker.worker.plugins) as client:
        task_id = await client.enqueue("sql")
        assert await client.wait(task_id, timeout=15)
    server = TestServer(create_app(settings, aredis), host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession() as session:
            url = server.make_url(f"/queues/{settings.queue.name}/tasks/{task_id}")
            async with session.get(url) as response:
                body = await response.text()
    finally:
        await server.close()
    assert response.status == 200
    assert "<dt>type</dt><dd>sql</dd>" in body


# -- a sink's unit test touches no Redis ---------------------------------------------------------------------------


class ListSink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def handle(self, events: list[Event]) -> None:
        self.events.extend(events)

    @hookimpl
    def gopherq_register_sinks(self, register: Any) -> None:
        register("list", self)


async def test_deliver_starts_no_embedded_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    sink = ListSink()
    harness = PluginHarness({"list": sink})
    stats = await harness.deliver(make_event("task.succeeded", task_id="t1"))
    assert [event.task_id for event in sink.events] == ["t1"]
    assert "stream" not in stats
    assert not (tmp_path / ".gopherq").exists()


def test_a_harness_asks_for_the_stream_sink_by_enabling_it() -> None:
    settings = {"redis": {"url": "redis://127.0.0.1:6379/0"}, "plugins": {"stream": {"enabled": True}}}
    assert "stream" in PluginHarness(settings=settings).plugins.sinks
    assert "stream" not in PluginHarness().plugins.sinks


# -- the functions plugin imports modules from the working directory ---------------------------------------------------


def test_a_function_module_in_the_working_directory_is_found(
    tmp_path: Path, redis_url: str, queue_name: str, worker_process: Callable[..., Any]
) -> None:
    (tmp_path / "cwd_tasks.py").write_text(
        "import gopherq\napp = gopherq.App()\n\n@app.task\ndef triple(x: int) -> int:\n    return 3 * x\n"
    )
    config = write_config(
        tmp_path,
        f'[redis]\nurl = "{redis_url}"\n[queue]\nname = "{queue_name}"\n[worker]\nfetch_timeout = 0.2\n'
        '[plugins.functions]\nmodules = ["cwd_tasks"]\n',
    )
    worker = worker_process(["run", "-c", str(config)], cwd=tmp_path)
    with Client(config=str(config)) as client:
        task_id = client.enqueue("function", function="cwd_tasks:triple", args=[14])
        record = client.wait(task_id, timeout=20)
    assert record is not None and record.result == 42, worker.output


def test_a_module_that_cannot_be_found_says_where_it_was_looked_for(tmp_path: Path) -> None:
    from gopherq.plugins.functions import FunctionExecutor, FunctionsSettings

    executor = FunctionExecutor(FunctionsSettings(modules=["no_such_tasks_module"]))
    with pytest.raises(Exception, match="working directory") as raised:
        asyncio.run(executor.open())
    assert "No module named 'no_such_tasks_module'" in str(raised.value)
    assert "pip install" in str(raised.value)


# -- cosmetics --------------------------------------------------------------------------------------------------------


def test_an_event_line_leaves_out_what_the_event_does_not_have() -> None:
    line = Event("task.enqueued", 0.0, queue="q", task_id="t1", task_type="sql").to_text()
    assert "worker=" not in line and "None" not in line
    assert line == "task.enqueued task=t1 type=sql queue=q"
    assert Event("worker.started", 0.0, worker="w", queue="q").to_text() == "worker.started queue=q worker=w"


async def test_one_failed_attempt_is_logged_once(gopherq_queue: RedisQueue, caplog: pytest.LogCaptureFixture) -> None:
    """At default settings each failed attempt is one log line carrying its error (the logging sink's
    `task.failed`); the lines that follow it (retrying, dead-lettered) do not repeat the message."""

    class Boom:
        def execute(self, task: Task, context: ExecutionContext) -> None:
            raise ValueError("nope-4711")

        @hookimpl
        def gopherq_register_executors(self, register: Any) -> None:
            register("boom", self)

    caplog.set_level("INFO")
    settings = {"queue": {"backoff_min": 0.01, "backoff_max": 0.02}}
    async with gopherq_queue.worker({"boom": Boom()}, settings=settings) as running:
        task_id = await running.client.enqueue("boom", max_attempts=2)
        record = await running.client.wait(task_id, timeout=15)
        assert record is not None and record.status is TaskStatus.DEAD
    mentions = [r for r in caplog.records if "nope-4711" in r.getMessage()]
    event_lines = [r.getMessage() for r in mentions if r.name == "gopherq.events"]
    assert len(event_lines) == 2 and all(line.startswith("task.failed ") for line in event_lines), event_lines
    others = [(r.name, r.levelname, r.getMessage()) for r in mentions if r.name != "gopherq.events"]
    assert [(name, level) for name, level, _ in others] == [("gopherq.core.worker", "WARNING")], others


def test_status_of_a_dead_lettered_task_is_dead_and_old_records_read_the_same() -> None:
    assert TaskStatus("dead") is TaskStatus.DEAD
    assert TaskStatus("failed") is TaskStatus.DEAD  # records written before the rename
    assert TaskStatus.DEAD.final


class StrictPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str
    params: list[Any] = []
    database: str


class Strict:
    payload_model = StrictPayload

    async def execute(self, task: Task, context: ExecutionContext) -> None:
        return None

    @hookimpl
    def gopherq_register_executors(self, register: Any) -> None:
        register("sql", self)


def test_a_payload_error_lists_every_problem_with_a_did_you_mean() -> None:
    run = PluginHarness({"sql": Strict()}).run_sync({"type": "sql", "qurey": "select 1", "params": "x"})
    assert run.status == "rejected" and run.error is not None
    message = run.error.message
    assert "field 'query' is required" in message
    assert "field 'database' is required" in message
    assert "field 'params'" in message
    assert "field 'qurey' is not a field of this task type (did you mean 'query'?)" in message
    control = PluginHarness({"sql": Strict()}).run_sync(
        {"type": "sql", "query": "q", "database": "d", "max_attemps": 3}
    )
    assert control.error is not None and "(did you mean 'max_attempts'?)" in control.error.message


def test_a_payload_error_lists_a_bounded_number_of_problems() -> None:
    fields = {f"extra_{index}": index for index in range(50)}
    run = PluginHarness({"sql": Strict()}).run_sync({"type": "sql", "query": "q", "database": "d", **fields})
    assert run.error is not None
    assert run.error.message.count("is not a field") <= 10
    assert "more" in run.error.message


# -- which thread runs a plain execute / handle --------------------------------------------------------------------


class SqliteExecutor:
    """A sqlite3 connection made in `open` and used in `execute`: sqlite3 refuses use from another thread."""

    own_threads = 1

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connection: Any = None
        self.threads_seen: set[int] = set()

    def open(self) -> None:
        import sqlite3

        self.threads_seen.add(threading.get_ident())
        self.connection = sqlite3.connect(self.path)
        self.connection.execute("create table if not exists t (x)")

    def execute(self, task: Task, context: ExecutionContext) -> int:
        self.threads_seen.add(threading.get_ident())
        self.connection.execute("insert into t values (?)", (task.fields["x"],))
        return int(self.connection.execute("select count(*) from t").fetchone()[0])

    def close(self) -> None:
        self.threads_seen.add(threading.get_ident())
        self.connection.close()

    @hookimpl
    def gopherq_register_executors(self, register: Any) -> None:
        register("sqlite", self)


async def test_an_executor_with_one_thread_runs_open_execute_and_close_in_that_thread(tmp_path: Path) -> None:
    executor = SqliteExecutor(tmp_path / "db.sqlite")
    async with PluginHarness({"sqlite": executor}) as harness:
        runs = await asyncio.gather(*(harness.run({"type": "sqlite", "x": index}) for index in range(5)))
    assert all(run.succeeded for run in runs), [run.error for run in runs]
    assert sorted(run.result for run in runs) == [1, 2, 3, 4, 5]
    assert len(executor.threads_seen) == 1 and threading.get_ident() not in executor.threads_seen


async def test_a_plain_execute_runs_off_the_event_loop_thread() -> None:
    seen: list[int] = []

    class Plain:
        def execute(self, task: Task, context: ExecutionContext) -> None:
            seen.append(threading.get_ident())

        @hookimpl
        def gopherq_register_executors(self, register: Any) -> None:
            register("plain", self)

    async with PluginHarness({"plain": Plain()}) as harness:
        assert (await harness.run({"type": "plain"})).succeeded
    assert seen and seen[0] != threading.get_ident()


class SqliteSink:
    """Events into a sqlite table, with a plain `def handle`: open, handle and close share one thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connection: Any = None
        self.threads_seen: set[int] = set()

    def open(self) -> None:
        import sqlite3

        self.threads_seen.add(threading.get_ident())
        self.connection = sqlite3.connect(self.path)
        self.connection.execute("create table events (name, task_id)")

    def handle(self, events: list[Event]) -> None:
        self.threads_seen.add(threading.get_ident())
        self.connection.executemany("insert into events values (?, ?)", [(e.name, e.task_id) for e in events])
        self.connection.commit()

    def close(self) -> None:
        self.threads_seen.add(threading.get_ident())
        self.connection.close()

    @hookimpl
    def gopherq_register_sinks(self, register: Any) -> None:
        register("sqlite", self, batch_size=2)


async def test_a_plain_sink_runs_open_handle_and_close_in_one_thread_of_its_own(tmp_path: Path) -> None:
    import sqlite3

    sink = SqliteSink(tmp_path / "events.sqlite")
    stats = await PluginHarness({"sqlite": sink}).deliver(
        *(make_event("task.started", task_id=f"t{i}") for i in range(5))
    )
    assert stats["sqlite"]["delivered"] == 5 and stats["sqlite"]["failed_batches"] == 0
    assert len(sink.threads_seen) == 1 and threading.get_ident() not in sink.threads_seen
    with sqlite3.connect(tmp_path / "events.sqlite") as db:
        assert db.execute("select count(*) from events").fetchone()[0] == 5


# -- the test kit pushes raw tasks ----------------------------------------------------------------------------------


async def test_the_queue_fixture_pushes_a_raw_task_unvalidated(gopherq_queue: RedisQueue) -> None:
    async with gopherq_queue.worker() as running:
        await gopherq_queue.push_raw(b'{"id": "raw1", "type": "nope"}')
        await gopherq_queue.push_raw({"id": "raw2", "type": "function", "function": 3})
        for task_id in ("raw1", "raw2"):
            record = await running.client.wait(task_id, timeout=15)
            assert record is not None and record.status is TaskStatus.DEAD
    assert record.dead_reason == "schema_invalid"


def _cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    from tests.support.common import GOPHERQ, cli_env

    return subprocess.run(
        [GOPHERQ, *args], cwd=cwd, env=cli_env(env), capture_output=True, text=True, timeout=60, check=False
    )


def test_a_warning_about_plugin_selection_is_printed_once(tmp_path: Path) -> None:
    proc = _cli(["plugins"], tmp_path, {"GOPHERQ_DISABLE_PLUGINS": "webhok"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("disabled plugin 'webhok' is not installed (did you mean 'webhook'?)") == 1


def test_plugins_lists_functions_as_built_in(tmp_path: Path) -> None:
    proc = _cli(["plugins", "--json"], tmp_path)
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert rows["functions"]["builtin"]


def test_result_in_text_mode_shows_the_result(tmp_path: Path, redis_url: str, queue_name: str, sync_redis: Any) -> None:
    record = {
        "id": "r1",
        "queue": queue_name,
        "type": "function",
        "status": "succeeded",
        "attempts": 1,
        "result": {"answer": 42},
    }
    from gopherq.core.keys import QueueKeys

    sync_redis.set(QueueKeys(queue_name).result("r1"), json.dumps(record), ex=60)
    config = write_config(tmp_path, f'[redis]\nurl = "{redis_url}"\n[queue]\nname = "{queue_name}"\n')
    proc = _cli(["result", "-c", str(config), "r1"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert '{"answer": 42}' in proc.stdout


def test_workers_prints_its_count_on_stdout_after_the_workers(
    tmp_path: Path, redis_url: str, queue_name: str, worker_process: Callable[..., Any]
) -> None:
    from tests.support.common import wait_until

    config = write_config(tmp_path, f'[redis]\nurl = "{redis_url}"\n[queue]\nname = "{queue_name}"\n')
    worker_process(["run", "-c", str(config)])

    def listed() -> Any:
        proc = _cli(["workers", "-c", str(config)], tmp_path)
        return proc if "1 worker(s)" in proc.stdout else None

    proc = wait_until(listed, timeout=20, what="the worker to be listed")
    lines = proc.stdout.splitlines()
    assert lines[-1] == f"1 worker(s) on {queue_name}"
    assert not any("worker(s)" in line for line in lines[:-1])
    assert lines[1].startswith("    succeeded=") and lines[1].endswith("cancelled=0")


async def test_events_of_one_task_come_in_time_order(gopherq_queue: RedisQueue, sync_redis: Any) -> None:
    from gopherq import EventLog

    now = time.time()
    # A producer's task.enqueued written after the worker's first events (write order is not time order).
    async with gopherq_queue.worker() as running:
        for name, stamp in (("task.dequeued", now + 1), ("task.started", now + 2), ("task.enqueued", now)):
            line = json.dumps({"event": name, "timestamp": stamp, "task_id": "o1"}).encode()
            await EventLog(1000).write(running.client.redis, gopherq_queue.name, [(line, "o1")])
        events = await running.client.inspect.events(gopherq_queue.name, task_id="o1", latest=True)
    assert [event.name for event in events] == ["task.enqueued", "task.dequeued", "task.started"]


def test_the_harness_runs_no_redis_for_a_sink_example_in_a_fresh_process(tmp_path: Path) -> None:
    """The documented sink test, run as a plugin author would, in an empty directory with no Redis configured."""
    code = (
        "import asyncio\n"
        "from gopherq.testing import PluginHarness, make_event\n"
        "class S:\n"
        "    def handle(self, events): pass\n"
        "    from gopherq import hookimpl\n"
        "    @hookimpl\n"
        "    def gopherq_register_sinks(self, register): register('s', self)\n"
        "print(asyncio.run(PluginHarness({'s': S()}).deliver('task.started')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOPHERQ_", "REDIS_"))}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / ".gopherq").exists()
