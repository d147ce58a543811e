"""GoPherQ: Python tasks through the `pycall` example executor, HTTP tasks through the built-in `http` executor.

Client: `gopherq.AsyncClient` (uvloop); one by one = `enqueue()` per task, bulk = `enqueue_many()` per 1,000.
Worker: `gopherq run -c <toml>`; logging at WARNING (so the logging sink is off), everything else default
unless the workload says so. The "shipped" rows start it instead from the repository's own `gopherq.toml` as shipped
(logging at INFO with the logging sink's events, the stream on), with only Redis, the queue and the workload's
concurrency and batch size set; the "stream off" rows add `[plugins.stream] enabled = false` to the usual file
(and "no timelines" `timeline = 0`).
When the pycall plugin is not installed (the smoke run in the test environment) the worker is started through
bench/gopherq_worker.py, which adds it from examples/ without installing it.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from bench.peers import AsyncPeer, Batch, Context, WorkerSpec
from gopherq import AsyncClient, Task, load_settings
from gopherq.core.keys import QueueKeys

#: Worker settings per workload (the fastest reasonable single-process configuration found, see the report).
NOOP_CONCURRENCY = 500
NOOP_BATCH = 500
FUNCTIONS = {"noop": "bench.tasks:anoop", "mark": "bench.tasks:amark", "probe": "bench.tasks:aprobe"}


def pycall_installed() -> bool:
    return any(ep.name == "pycall" for ep in importlib.metadata.entry_points(group="gopherq"))


def pycall_source(repo: Path) -> Path:
    return repo / "examples" / "gopherq-pycall" / "src"


#: Decided at import, before the client may put the example's source tree (and its egg-info) on sys.path.
PYCALL_INSTALLED = pycall_installed()


def pycall_extra() -> dict[str, Any]:
    """The pycall plugin as an extra plugin, unless its entry point is visible (installed, or an egg-info
    beside the source on sys.path), in which case plugin discovery finds it by itself."""
    if pycall_installed():
        return {}
    import gopherq_pycall

    return {"pycall": gopherq_pycall}


class GoPherQPeer(AsyncPeer):
    name = "gopherq"
    label = "GoPherQ"
    dist = "gopherq"
    has_bulk = True
    http_client = "built-in `http` executor: httpx API over its own aiohttp transport (default), also httpcore's"
    configs = {
        "noop": f"1 process, concurrency {NOOP_CONCURRENCY}, batch_size {NOOP_BATCH}, pycall `async def` noop",
        "http": "1 process, concurrency = c, built-in http executor (pool size = c, default transport)",
        "latency": f"1 process, concurrency {NOOP_CONCURRENCY}, batch_size {NOOP_BATCH}",
    }

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.settings = load_settings(None, {"redis": {"url": ctx.redis_url}, "queue": {"name": ctx.queue}}, {})
        self.client: AsyncClient | None = None
        self.installed = PYCALL_INSTALLED
        #: Where `send` puts tasks: the worker's queue, or a staging list that `release` renames into it.
        self.send_queue: str | None = None
        #: The task-control variant of a drain (None: plain tasks). "low": every task, the markers too, on the low
        #: priority level, so each claim goes through the priority lists; "unique": a unique key on every no-op
        #: task, so each enqueue takes a lock and each settle frees one.
        self.variant: str | None = None
        self._unique = 0

    def describe(self, spec: WorkerSpec) -> str:
        text = super().describe(spec)
        if spec.options.get("config") == "shipped":
            text += ", settings of the shipped `gopherq.toml` otherwise (logging at INFO with its sink, stream on)"
        if spec.options.get("stream") == "off":
            text += ", `[plugins.stream] enabled = false`"
        elif spec.options.get("stream") == "no-timeline":
            text += ", `[plugins.stream] timeline = 0`"
        if "prefetch" in spec.options:
            text += f", `[worker] prefetch = {spec.options['prefetch']}`"
        if spec.processes > 1:
            text = text.replace("1 process", f"{spec.processes} processes (`--processes {spec.processes}`)")
        if "transport" in spec.options:
            text += f', `[plugins.http] transport = "{spec.options["transport"]}"`'
        if "tracing" in spec.options:
            text += f', `[plugins.otel] enabled, sample_ratio = {spec.options["tracing"]}, exporter = "none"`'
        return text

    # -- client ------------------------------------------------------------------------------------------------

    async def open(self) -> None:
        plugins = None
        if not self.installed:
            import sys

            from gopherq.core.plugins import load_plugins

            if str(pycall_source(self.ctx.repo)) not in sys.path:
                sys.path.insert(0, str(pycall_source(self.ctx.repo)))
            plugins = load_plugins(self.settings, extra=pycall_extra())
        self.client = AsyncClient(self.settings, plugins=plugins, queue=self.send_queue)
        await self.client.connect()

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    def _task(self, kind: str, args: tuple[Any, ...]) -> Task:
        assert self.client is not None
        if kind == "http":
            return self.client.http(args[0])
        control: dict[str, Any] = {}
        if self.variant == "low":
            control["priority"] = "low"
        elif self.variant == "unique" and kind == "noop":
            self._unique += 1
            control["unique_key"] = f"u{self._unique}"
        return self.client.task("pycall", function=FUNCTIONS[kind], args=list(args), **control)

    async def send_one(self, kind: str, args: tuple[Any, ...]) -> None:
        assert self.client is not None
        if self.variant is not None:
            await self.client.enqueue_many([self._task(kind, args)])
        elif kind == "http":
            await self.client.enqueue_http(args[0])
        else:
            await self.client.enqueue("pycall", function=FUNCTIONS[kind], args=list(args))

    async def send_many(self, kind: str, args: Sequence[tuple[Any, ...]]) -> None:
        assert self.client is not None
        await self.client.enqueue_many([self._task(kind, a) for a in args])

    # -- staged start (scaling) ----------------------------------------------------------------------------------

    def stage(self, batches: list[Batch]) -> None:
        """Queue batches on a staging list that no worker reads."""
        self.send_queue = f"{self.ctx.queue}_staging"
        try:
            for batch in batches:
                self.send(batch)
        finally:
            self.send_queue = None

    def workers_ready(self, count: int) -> bool:
        """Whether `count` worker processes have registered their heartbeat (they are up and fetching)."""
        with redis.Redis.from_url(self.ctx.redis_url) as client:
            return int(client.zcard(QueueKeys(self.ctx.queue).workers)) >= count

    def release(self) -> None:
        """Make the staged tasks the queue at once (RENAME wakes the workers blocked on the ready list)."""
        with redis.Redis.from_url(self.ctx.redis_url) as client:
            client.rename(f"{self.ctx.queue}_staging", QueueKeys(self.ctx.queue).ready)

    # -- worker ------------------------------------------------------------------------------------------------

    def config_file(self, spec: WorkerSpec) -> Path:
        concurrency = spec.concurrency if spec.workload == "http" else NOOP_CONCURRENCY
        batch = min(concurrency, NOOP_BATCH)
        if spec.options.get("config") == "shipped":
            return self.shipped_config(spec, concurrency, batch)
        lines = [
            "[redis]",
            f'url = "{self.ctx.redis_url}"',
            "[queue]",
            f'name = "{self.ctx.queue}"',
            "[worker]",
            f"concurrency = {concurrency}",
            f"batch_size = {batch}",
            f"processes = {spec.processes}",
            *([f"prefetch = {spec.options['prefetch']}"] if "prefetch" in spec.options else []),
            "[logging]",
            'level = "WARNING"',
            "[plugins.http]",
            f"max_connections = {concurrency}",
        ]
        if "transport" in spec.options:
            lines.append(f'transport = "{spec.options["transport"]}"')
        if "tracing" in spec.options:  # the otel plugin at this sample ratio; spans recorded, none exported
            lines += [
                "[plugins.otel]",
                "enabled = true",
                'exporter = "none"',
                f"sample_ratio = {spec.options['tracing']}",
            ]
        if spec.options.get("stream") == "off":
            lines += ["[plugins.stream]", "enabled = false"]
        elif spec.options.get("stream") == "no-timeline":
            lines += ["[plugins.stream]", "timeline = 0"]
        tag = f"{spec.workload}-c{concurrency}-p{spec.processes}-{spec.options.get('transport', 'default')}"
        tag += f"-traced{spec.options['tracing']}" if "tracing" in spec.options else ""
        tag += f"-stream-{spec.options['stream']}" if "stream" in spec.options else ""
        tag += f"-prefetch{spec.options['prefetch']}" if "prefetch" in spec.options else ""
        path = self.ctx.run_dir / f"gopherq-{tag}.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def shipped_config(self, spec: WorkerSpec, concurrency: int, batch: int) -> Path:
        """The repository's `gopherq.toml` as shipped, pointed at the harness's Redis and queue, with the workload's
        concurrency and batch size (and the HTTP pool sized to it, as in the other rows): what a user who starts from
        the example file gets."""
        import tomllib

        shipped = tomllib.loads((self.ctx.repo / "gopherq.toml").read_text())
        shipped["redis"] = {"url": self.ctx.redis_url}
        shipped["queue"]["name"] = self.ctx.queue
        shipped["worker"].update(concurrency=concurrency, batch_size=batch, processes=spec.processes)
        shipped.setdefault("plugins", {}).setdefault("http", {})["max_connections"] = concurrency
        path = self.ctx.run_dir / f"gopherq-shipped-{spec.workload}-c{concurrency}-p{spec.processes}.toml"
        path.write_text(toml_text(shipped))
        return path

    def worker(self, spec: WorkerSpec) -> tuple[list[str], dict[str, str]]:
        config = str(self.config_file(spec))
        if self.installed:
            return [self.exe("gopherq"), "run", "-c", config], {}
        extra_path = str(pycall_source(self.ctx.repo))
        return [self.exe("python"), "-m", "bench.gopherq_worker", "-c", config], {"BENCH_EXTRA_PATH": extra_path}


def toml_text(tables: dict[str, Any], prefix: str = "") -> str:
    """A settings dict as TOML: scalars and lists of scalars (JSON's syntax is TOML's for these), tables nested."""
    import json

    scalars = [f"{key} = {json.dumps(value)}" for key, value in tables.items() if not isinstance(value, dict)]
    text = (f"[{prefix}]\n" if prefix and scalars else "") + "".join(line + "\n" for line in scalars)
    for key, value in tables.items():
        if isinstance(value, dict):
            text += toml_text(value, f"{prefix}.{key}" if prefix else key)
    return text
