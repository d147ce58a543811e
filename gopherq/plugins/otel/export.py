"""Where finished spans go: the exporter named in the settings, behind a bounded batching processor that never
slows the worker and never floods the log.

The processor keeps at most `queue_size` finished spans and exports them from its own thread; when the exporter
cannot keep up (an unreachable collector, a slow one), new spans are dropped and counted, never waited for. The
first failure or drop is one warning line; the totals are logged at shutdown and returned by `stats()`. The
exporter's own per-retry log lines are folded into that one warning. Shutdown is bounded by `shutdown_timeout`.
"""

from __future__ import annotations

import collections
import importlib.metadata as metadata
import logging
import os
import threading
import weakref
from collections.abc import Sequence
from functools import partial
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from gopherq.plugins.otel.settings import OtelSettings

log = logging.getLogger("gopherq.plugins.otel")

#: Loggers of the exporters whose every retry and failure is a line of their own (replaced by ours).
EXPORTER_LOGGERS = ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "opentelemetry.exporter.otlp.common.http")


class _Quiet(logging.Filter):
    """Drops an exporter's own records: the processor reports failures itself, once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return False


def exporter_name(config: OtelSettings) -> str:
    return (config.exporter or os.environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(",")[0].strip().lower()


def make_exporter(config: OtelSettings) -> SpanExporter | None:
    """The configured exporter; None for `none`. An unknown name or one that fails to build is a warning, and an
    exporter that drops everything (counted as failed) takes its place: bad settings never stop a worker."""
    name = exporter_name(config)
    try:
        if name == "none":
            return None
        if name in ("otlp", "otlp_proto_http"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            for logger in EXPORTER_LOGGERS:
                logging.getLogger(logger).addFilter(_Quiet())
            return OTLPSpanExporter(endpoint=config.endpoint, timeout=config.export_timeout)
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            return ConsoleSpanExporter()
        found = [ep for ep in metadata.entry_points(group="opentelemetry_traces_exporter") if ep.name == name]
        if not found:
            known = sorted(
                {
                    "otlp",
                    "console",
                    "none",
                    *(ep.name for ep in metadata.entry_points(group="opentelemetry_traces_exporter")),
                }
            )
            raise LookupError(f"unknown exporter {name!r} (known: {', '.join(known)})")
        exporter: SpanExporter = found[0].load()()
        return exporter
    except Exception as exc:
        log.warning("otel: cannot use the span exporter %r: %s: %s; spans are dropped", name, type(exc).__name__, exc)
        return DroppingExporter()


class DroppingExporter(SpanExporter):
    """Stands in for an exporter that could not be built: every export fails (and is counted as such)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        return None


def _forked(processor: weakref.ref[BoundedProcessor]) -> None:
    """Run in a forked child for `processor` (if it still exists): the child has no export thread (see `_thread`)."""
    found = processor()
    if found is not None:
        found._thread = None


class BoundedProcessor(SpanProcessor):
    """Batches sampled spans for `exporter` in a bounded buffer, exported by a daemon thread (see the module doc).
    It has no `on_start` of its own (the base class's does nothing), so the plugin's own spans skip the call and
    the parent context it would be given (direct.py)."""

    def __init__(self, exporter: SpanExporter, config: OtelSettings) -> None:
        self.exporter = exporter
        self.capacity = config.queue_size
        self.batch_size = config.batch_size
        self.interval = config.export_interval
        self.shutdown_timeout = config.shutdown_timeout
        self.buffer: collections.deque[ReadableSpan] = collections.deque()
        self.exported = 0
        self.dropped = 0
        self.failed = 0
        self._warned = isinstance(exporter, DroppingExporter)  # make_exporter has said why, once
        self._closed = False
        self._wakeup = threading.Event()
        self._lock = threading.Lock()  # one export at a time (the thread's, or a flush's)
        #: The export thread, started by the first span; None again in a forked child (`_forked`), which has no
        #: thread of its parent's, so its first span starts its own. (Told by the fork itself, not by comparing
        #: `os.getpid()` per span: a system call for every span the worker ends.)
        self._thread: threading.Thread | None = None
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=partial(_forked, weakref.ref(self)))

    def _start(self) -> None:
        """Start (or, in a forked child, restart) the export thread."""
        self._lock = threading.Lock()  # (a child's copy may have been held, by its parent's thread, at the fork)
        self._thread = threading.Thread(target=self._run, name="gopherq-otel-export", daemon=True)
        self._thread.start()

    def on_end(self, span: ReadableSpan) -> None:
        if self._closed or not span.context.trace_flags.sampled:
            return
        if self._thread is None:
            self._start()
        buffer = self.buffer
        if len(buffer) >= self.capacity:
            self.dropped += 1
            self._warn("the export buffer is full (the exporter cannot keep up)")
            return
        buffer.append(span)
        if len(buffer) >= self.batch_size:
            self._wakeup.set()

    def _warn(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "otel: spans are being dropped: %s; tasks are not affected (totals at shutdown)", why.replace("\n", " ")
            )

    def _run(self) -> None:
        while not self._closed:
            self._wakeup.wait(self.interval)
            self._wakeup.clear()
            self._export_all()

    def _export_all(self) -> None:
        with self._lock:
            while self.buffer:
                batch = [self.buffer.popleft() for _ in range(min(self.batch_size, len(self.buffer)))]
                try:
                    ok = self.exporter.export(batch) is SpanExportResult.SUCCESS
                    reason = "the exporter reported a failure (collector unreachable or refusing)"
                except Exception as exc:
                    ok, reason = False, f"the exporter raised {type(exc).__name__}: {exc}"
                if ok:
                    self.exported += len(batch)
                else:
                    self.failed += len(batch)
                    self._warn(reason)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        if self._thread is None or self._closed:
            return True
        done = threading.Thread(target=self._export_all, daemon=True)
        done.start()
        done.join(timeout_millis / 1000)
        return not done.is_alive()

    def shutdown(self) -> None:
        """Export what is left within `shutdown_timeout`, then stop; what could not go is counted as dropped."""
        if self._closed:
            return
        thread = self._thread
        if thread is not None:  # (None in a forked child that has ended no span: nothing of its own to export)
            self.force_flush(int(self.shutdown_timeout * 1000))
        self._closed = True
        self._wakeup.set()
        try:
            self.exporter.shutdown()  # interrupts an exporter waiting to retry
        except Exception as exc:
            log.debug("otel: exporter shutdown failed: %s", exc)
        self.dropped += len(self.buffer)
        self.buffer.clear()
        stats = self.stats()
        level = logging.WARNING if (self.dropped or self.failed) and not self._warned else logging.INFO
        log.log(level, "otel: spans exported %(exported)d, failed %(failed)d, dropped %(dropped)d", stats)

    def stats(self) -> dict[str, Any]:
        return {"exported": self.exported, "failed": self.failed, "dropped": self.dropped}
