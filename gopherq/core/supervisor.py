"""Multi-process workers: a supervisor that runs N ordinary worker processes, forwards signals, restarts the dead.

`gopherq run --processes N` (or `worker.processes = N`) lands here. Each child is a normal single-process
worker started as `python -c 'from gopherq.core.child import child_main; child_main()'`; the supervisor
writes the already-resolved settings to the child's stdin (pickled), so every child runs with exactly the
settings the supervisor was given (CLI flags, environment and TOML merged once, no re-parsing). A subprocess
rather than a `multiprocessing` spawn: no re-import of the caller's `__main__`, and a child is a plain process
whose signals and exit status mean what they mean for `gopherq run`.

Children run in their own session, so a terminal's Ctrl-C reaches only the supervisor, which forwards each
signal exactly once (a worker treats a second SIGTERM/SIGINT as "exit now"). A child keeps its stdin pipe open
and shuts itself down gracefully when it reads end-of-file: a supervisor killed with SIGKILL leaves no orphans.

The embedded Redis is started by the supervisor before the first child, and the supervisor stays connected to
it (as a named gopherq client) until every child has left, so the last-one-out rule of `embedded.py` never
stops the server under a sibling; the supervisor stops it last.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType, ModuleType
from typing import Any

import redis

from gopherq.core.embedded import EmbeddedRedis, client_name
from gopherq.core.errors import ConfigError
from gopherq.core.settings import Settings

log = logging.getLogger(__name__)

CHILD_CODE = "from gopherq.core.child import child_main; child_main()"

#: A child that exits with this status failed at start-up (bad settings or plugins): restarting cannot help.
EXIT_CONFIG = 2
#: A child that ran at least this long before dying is restarted at once; quicker deaths back off.
STABLE_AFTER = 10.0
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0
POLL_INTERVAL = 0.1


@dataclass
class Slot:
    """One of the N worker positions: the process that fills it now, and its restart bookkeeping."""

    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    exits: list[int] = field(default_factory=list)


class Supervisor:
    """Starts `settings.worker.processes` worker processes and keeps them running until told to stop.

    SIGTERM/SIGINT: forwarded to every child (a second one is forwarded again: children exit at once);
    the supervisor exits when all children have, 0 when every one exited 0. SIGTSTP: forwarded; children
    stop fetching, and a child that dies afterwards is not replaced. A child that dies unexpectedly is
    restarted, with exponential backoff when it keeps dying quickly.
    """

    def __init__(self, settings: Settings, extra_plugins: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.count = settings.worker.processes
        self.child_settings = settings.model_copy(
            update={"worker": settings.worker.model_copy(update={"processes": 1})}
        )
        self.extra_modules = _plugin_modules(extra_plugins or {})
        self.slots = [Slot(i) for i in range(self.count)]
        self.signals: list[int] = []
        self.stopping = 0
        self.quiet = False
        self.fatal: int | None = None
        self._embedded: EmbeddedRedis | None = None
        self._embedded_client: Any = None
        self._name = client_name("supervisor")

    # -- lifecycle -------------------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until every child has stopped; returns the exit status."""
        self._attach_embedded()
        previous = self._install_signal_handlers()
        try:
            log.info("supervisor %d: starting %d worker processes", os.getpid(), self.count)
            for slot in self.slots:
                self._spawn(slot)
            while any(slot.proc is not None or slot.restart_at is not None for slot in self.slots):
                self._handle_signals()
                self._reap_children()
                self._restart_due()
                time.sleep(POLL_INTERVAL)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._kill_leftovers()
            self._detach_embedded()
        status = self._exit_status()
        log.info("supervisor %d: all worker processes stopped (exit status %d)", os.getpid(), status)
        return status

    def _exit_status(self) -> int:
        if self.fatal is not None:
            return self.fatal
        last = [slot.exits[-1] for slot in self.slots if slot.exits]
        return 0 if last and all(code == 0 for code in last) else 1

    # -- signals ---------------------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict[int, Any]:
        def remember(signum: int, _frame: FrameType | None) -> None:
            self.signals.append(signum)

        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGTSTP):
            previous[signum] = signal.signal(signum, remember)
        return previous

    def _handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            name = signal.Signals(signum).name
            if signum == signal.SIGTSTP:
                log.info("supervisor: SIGTSTP received: children stop fetching; dead children are not replaced")
                self.quiet = True
            else:
                self.stopping += 1
                if self.stopping == 1:
                    log.info("supervisor: %s received: stopping %d worker processes", name, self.count)
                else:
                    log.warning("supervisor: second %s: worker processes exit now", name)
            for slot in self.slots:
                slot.restart_at = None
                self._send(slot, signum)

    def _send(self, slot: Slot, signum: int) -> None:
        if slot.proc is not None and slot.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                slot.proc.send_signal(signum)

    # -- children --------------------------------------------------------------------------------------------

    def _settings_for(self, slot: Slot) -> Settings:
        """A child's settings: the shared ones, with its own metrics port (`[metrics] port` + its index)."""
        port = self.child_settings.metrics.port
        if port is None:
            return self.child_settings
        metrics = self.child_settings.metrics.model_copy(update={"port": port + slot.index})
        return self.child_settings.model_copy(update={"metrics": metrics})

    def _spawn(self, slot: Slot) -> None:
        payload = pickle.dumps({"settings": self._settings_for(slot), "plugins": self.extra_modules})
        proc = subprocess.Popen([sys.executable, "-c", CHILD_CODE], stdin=subprocess.PIPE, start_new_session=True)
        assert proc.stdin is not None
        try:
            proc.stdin.write(payload)
            proc.stdin.flush()
        except BrokenPipeError:
            pass  # it died at once; reaped like any other death
        slot.proc, slot.started, slot.restart_at = proc, time.monotonic(), None
        log.info("supervisor: worker process %d/%d started (pid %d)", slot.index + 1, self.count, proc.pid)

    def _reap_children(self) -> None:
        for slot in self.slots:
            proc = slot.proc
            if proc is None or proc.poll() is None:
                continue
            code = proc.returncode
            slot.exits.append(code)
            slot.proc = None
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            lived = time.monotonic() - slot.started
            if self.stopping:
                log.info("supervisor: worker process pid %d exited (%s)", proc.pid, describe_exit(code))
                continue
            if code == EXIT_CONFIG and lived < STABLE_AFTER:
                log.error("supervisor: worker process pid %d failed at start-up; stopping all", proc.pid)
                self.fatal = EXIT_CONFIG
                self.signals.append(signal.SIGTERM)
                continue
            if self.quiet:
                log.warning("supervisor: worker process pid %d exited (%s) while quiet", proc.pid, describe_exit(code))
                continue
            slot.failures = 0 if lived >= STABLE_AFTER else slot.failures + 1
            delay = 0.0 if slot.failures == 0 else min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (slot.failures - 1))
            log.warning(
                "supervisor: worker process pid %d died unexpectedly (%s) after %.1fs; restarting in %.1fs",
                proc.pid,
                describe_exit(code),
                lived,
                delay,
            )
            slot.restart_at = time.monotonic() + delay

    def _restart_due(self) -> None:
        if self.stopping or self.quiet:
            return
        now = time.monotonic()
        for slot in self.slots:
            if slot.restart_at is not None and now >= slot.restart_at:
                self._spawn(slot)

    def _kill_leftovers(self) -> None:
        """Only on the way out after an error in the supervisor itself: children must not outlive it."""
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                log.warning("supervisor: terminating leftover worker process pid %d", slot.proc.pid)
                slot.proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    slot.proc.wait(self.settings.worker.shutdown_timeout + 5)
                if slot.proc.poll() is None:
                    slot.proc.kill()
                    slot.proc.wait()

    # -- embedded Redis --------------------------------------------------------------------------------------

    def _attach_embedded(self) -> None:
        """Start the embedded server (if that is the configured Redis) and hold a named connection to it."""
        if not self.settings.redis.embedded:
            return
        self._embedded = EmbeddedRedis(self.settings.data_dir, self.settings.redis.server_binary)
        self._embedded.ensure_running()
        self._embedded_client = redis.Redis(
            unix_socket_path=str(self._embedded.socket), client_name=self._name, socket_timeout=5
        )
        self._embedded_client.ping()

    def _detach_embedded(self) -> None:
        if self._embedded is None:
            return
        with contextlib.suppress(Exception):
            self._embedded_client.close()
        try:
            self._embedded.stop(only_if_unused=True, own_name=self._name)
        except Exception as exc:
            log.warning("supervisor: could not stop the embedded redis-server: %s", exc)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _plugin_modules(extra: dict[str, Any]) -> dict[str, str]:
    """Extra plugins travel to the children by module name, so only modules can be passed."""
    names: dict[str, str] = {}
    for name, plugin in extra.items():
        if not isinstance(plugin, ModuleType):
            raise ConfigError(
                f"worker.processes > 1: extra plugin {name!r} is not a module; register it through an entry point"
            )
        names[name] = plugin.__name__
    return names
