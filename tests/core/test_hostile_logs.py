"""Issue 18, part 6 (logs): text from producers cannot forge, split or colour a log line.

Ids, URLs, header names and error messages that carry line feeds, carriage returns, ANSI sequences and Unicode line
separators are pushed raw to a real worker process; every line of its log must start with the log format's prefix
(no forged record), hold no raw control character, and show the escaped text. The formatter and the event line are
also checked on their own, tracebacks included.
"""

from __future__ import annotations

import io
import json
import logging
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from pytest_httpserver import HTTPServer

from gopherq.core.events import Event
from gopherq.core.keys import QueueKeys
from gopherq.core.loglines import _UNSAFE, EscapingFormatter, escape_controls
from gopherq.core.runner import LOG_FORMAT
from tests.support.common import REPO, wait_until, write_config

#: A record's first line: `2024-05-01 12:00:00,123 INFO gopherq.core.worker: ...`.
PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) gopherq[\w.]*: ")
#: What an attacker appends to make a line of their own.
FORGED = "\n2099-01-01 00:00:00,000 ERROR gopherq.forged: owned"
#: Characters that rewrite what a terminal or a viewer shows.
RAW = ("\r", "\x1b", "\u2028", "\u202e", "\x85")


def test_escape_controls_writes_every_unsafe_character_as_an_escape() -> None:
    assert escape_controls("plain text, ü and 日本") == "plain text, ü and 日本"
    assert escape_controls("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert escape_controls("\x00\x1b[31m\x7f\x85\x9f") == "\\u0000\\u001b[31m\\u007f\\u0085\\u009f"
    assert escape_controls("x\u2028y\u2029z\u202egnp.exe\u2066") == "x\\u2028y\\u2029z\\u202egnp.exe\\u2066"
    line = json.dumps({"id": "a\u2028b\x85c"}, ensure_ascii=False)
    assert json.loads(escape_controls(line)) == {"id": "a\u2028b\x85c"}  # a JSON line stays the same JSON


def formatted(emit: Callable[[logging.Logger], None]) -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(EscapingFormatter(LOG_FORMAT))
    logger = logging.getLogger("gopherq.test_hostile_logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
    return out.getvalue()


def test_a_record_is_one_line_and_a_traceback_keeps_its_lines_with_messages_escaped() -> None:
    def emit(logger: logging.Logger) -> None:
        logger.warning("task %s failed: %s", "id" + FORGED, "GET http://h/\x1b[2J\r")
        try:
            try:
                raise KeyError("inner" + FORGED)
            except KeyError as exc:
                raise ValueError("outer" + FORGED + "\u2028") from exc
        except ValueError:
            logger.exception("executor crashed for task %s", "t" + FORGED)

    text = formatted(emit)
    lines = text.splitlines()
    records = [line for line in lines if PREFIX.match(line)]
    assert len(records) == 2 and not any(line.startswith("2099") for line in lines)
    assert records[0].endswith(
        "task id\\n2099-01-01 00:00:00,000 ERROR gopherq.forged: owned failed: GET http://h/\\u001b[2J\\r"
    )
    assert "Traceback (most recent call last):" in lines  # the traceback is still multi-line
    assert any(line.startswith('  File "') for line in lines)
    assert "ValueError: outer\\n2099-01-01 00:00:00,000 ERROR gopherq.forged: owned\\u2028" in lines
    assert "KeyError: 'inner\\n2099-01-01 00:00:00,000 ERROR gopherq.forged: owned'" in lines
    assert not any(char in text for char in RAW)


def test_an_event_line_is_one_line() -> None:
    event = Event(
        "task.failed",
        0.0,
        "w1",
        "q",
        "id" + FORGED,
        "http",
        1,
        None,
        {"reason": "http_status", "message": "GET http://h/\x1b[31m\r: HTTP 404"},
        {"http_host": "h\u2028x"},
    )
    line = event.to_text()
    assert "\n" not in line and not any(char in line for char in RAW)
    assert "task=id\\n2099-01-01 00:00:00,000 ERROR gopherq.forged: owned" in line
    assert "error=http_status: GET http://h/\\u001b[31m\\r: HTTP 404" in line and "http_host=h\\u2028x" in line


def test_a_worker_log_has_no_forged_line_whatever_the_tasks_hold(
    tmp_path: Path,
    worker_process: Callable[..., Any],
    http: HTTPServer,
    redis_url: str,
    queue_name: str,
    sync_redis: redis.Redis,
    run_gopherq: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    """Hostile ids, URLs, header names and error text, pushed raw, through a real worker and the built-in logging
    and stream sinks; then `gopherq events` prints the queue's events."""
    http.expect_request("/gone").respond_with_data("no", status=404)
    config = write_config(
        tmp_path,
        f'[redis]\nurl = "{redis_url}"\n[queue]\nname = "{queue_name}"\n[worker]\nconcurrency = 2\n'
        '[plugins.functions]\nmodules = ["tests.support.function_targets"]\n',
    )
    worker = worker_process(["run", "-c", str(config)], env={"PYTHONPATH": str(REPO)})
    wait_until(lambda: f"started: queue {queue_name}" in worker.output, timeout=30, what="the worker to start")
    hostile = FORGED + "\r\x1b[31m\u2028\u202e\x85"
    tasks: list[dict[str, Any]] = [
        {"id": "id" + hostile, "url": http.url_for("/gone"), "max_attempts": 1},
        {"id": "url-task", "url": http.url_for("/gone") + "?q=" + hostile, "max_attempts": 1},
        {"id": "header-task", "url": http.url_for("/gone"), "headers": {"X-A" + hostile: "v"}, "max_attempts": 1},
        {
            "id": "error-task",
            "type": "function",
            "function": "tests.support.function_targets:fails",
            "args": ["boom" + hostile],
            "max_attempts": 1,
        },
    ]
    for task in tasks:
        sync_redis.rpush(queue_name, json.dumps(task))
    dead = QueueKeys(queue_name).dead_index
    wait_until(lambda: sync_redis.zcard(dead) == len(tasks), timeout=30, what="every task to be dead-lettered")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0  # the sinks are flushed: every line is written

    log = worker.output
    assert not any(char in log for char in RAW)
    for line in log.splitlines():
        assert PREFIX.match(line) and not line.startswith("2099"), f"a line that is no record of its own: {line!r}"
    escaped = "\\n2099-01-01 00:00:00,000 ERROR gopherq.forged: owned\\r\\u001b[31m\\u2028\\u202e\\u0085"
    assert f"ValueError: boom{escaped}" in log  # the function's error text, in the worker's and the sink's lines
    assert re.search(r"gopherq\.events: task\.\w+ task=error-task .*boom" + re.escape(escaped), log)

    listed = run_gopherq(["events", "-c", str(config), "-n", "100"])
    assert listed.returncode == 0, listed.stderr
    shown = listed.stdout
    assert "task=error-task" in shown and f"boom{escaped}" in shown
    assert not any(char in shown for char in RAW)
    assert all(line.split(" ", 1)[0][:1].isdigit() for line in shown.splitlines())  # each line starts with a time


def test_no_unsafe_character_is_printable() -> None:
    """escape_controls returns printable text as it is without searching it: sound only while every character the
    escape applies to is one Python calls unprintable (controls, format characters, line separators)."""
    unsafe = _UNSAFE.findall("".join(map(chr, range(0x110000))))
    assert len(unsafe) == 79 and not any(char.isprintable() for char in unsafe)  # 79: see _UNSAFE
    assert escape_controls("a\u00a0b\u200dc") == "a\u00a0b\u200dc"  # unprintable but safe: searched, kept


def test_the_formatter_writes_the_time_as_logging_does_however_often_it_is_asked() -> None:
    plain, ours = logging.Formatter(LOG_FORMAT), EscapingFormatter(LOG_FORMAT)
    gmt = EscapingFormatter(LOG_FORMAT)
    gmt.converter = time.gmtime
    plain_gmt = logging.Formatter(LOG_FORMAT)
    plain_gmt.converter = time.gmtime
    record = logging.LogRecord("gopherq.x", logging.INFO, __file__, 1, "m", None, None)
    for created in (1700000000.0, 1700000000.5, 1700000000.999, 1700000001.001, 1700000000.25, 1800000000.75):
        record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
        for datefmt in (None, "%H:%M:%S", None):
            assert ours.formatTime(record, datefmt) == plain.formatTime(record, datefmt)
            assert gmt.formatTime(record, datefmt) == plain_gmt.formatTime(record, datefmt)
        assert ours.format(record) == plain.format(record)
