"""A worker process started by the supervisor (`gopherq run --processes N`): it reads its settings from the pipe on
its stdin, runs one worker, and exits when the supervisor goes away (the pipe closes).

Apart from the supervisor so that the supervisor does not import the runner that imports it.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pickle
import signal
import sys
import threading

from gopherq.core.errors import ConfigError, GoPherQError, PluginError
from gopherq.core.masking import Masker
from gopherq.core.runner import configure_logging, run_worker
from gopherq.core.settings import Settings
from gopherq.core.supervisor import EXIT_CONFIG

log = logging.getLogger("gopherq.core.supervisor")  # the same logger name as before the split


def _watch_parent(fd: int) -> None:
    """Block until the supervisor's end of our stdin closes (it exited or was killed), then stop gracefully.

    Reads the raw descriptor: a daemon thread blocked inside the buffered `sys.stdin` would hold its lock
    and abort the interpreter at exit."""
    with contextlib.suppress(OSError):
        while os.read(fd, 4096):
            pass
    os.kill(os.getpid(), signal.SIGTERM)


def child_main() -> None:
    """Entry point of a worker process started by the supervisor: read settings from stdin, run one worker."""
    configure_logging("INFO")
    stdin = sys.stdin.buffer
    try:
        data = pickle.load(stdin)
        settings: Settings = data["settings"]
        configure_logging(settings.logging.level, Masker.from_settings(settings))
        extra = {name: importlib.import_module(module) for name, module in data["plugins"].items()}
    except Exception as exc:
        log.error("worker process could not read its settings from the supervisor: %s", exc)
        sys.exit(EXIT_CONFIG)
    threading.Thread(target=_watch_parent, args=(stdin.fileno(),), name="gopherq-parent-watch", daemon=True).start()
    try:
        status = run_worker(settings, extra_plugins=extra)
    except (ConfigError, PluginError) as exc:
        log.error("%s", exc)
        sys.exit(EXIT_CONFIG)
    except GoPherQError as exc:
        log.error("%s", exc)
        sys.exit(1)
    sys.exit(status)
