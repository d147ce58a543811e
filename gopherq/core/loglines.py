"""Log lines that text from a producer cannot forge, split or colour: control characters are written as escapes.

Task ids, URLs, header names and error messages come from whoever enqueues, and they end up in log lines. A line
feed in one of them would start a line that looks like another record; a carriage return or an ANSI sequence would
rewrite what a terminal shows; a bidi override would reorder it. `EscapingFormatter`, which `configure_logging`
installs on the one handler of every gopherq process (worker, supervisor, web, API, CLI), escapes them in each
record's message, so a record is exactly one line starting with the format's prefix. A traceback stays multi-line:
its frames are GoPherQ's own code, and the exception messages in it are escaped the same way. `Event.to_text`, the
line `gopherq events` prints, uses `escape_controls` too.

The escapes are for safety and reading, not for parsing back: a backslash already in the text is left as it is.
`\\n`, `\\r` and `\\t` are written so; every other character becomes `\\uXXXX`, which keeps a JSON line valid
JSON (the logging sink's `format = "json"` lines go through the same formatter).
"""

from __future__ import annotations

import logging
import re
import time
import traceback
from collections.abc import Iterable
from types import TracebackType
from typing import Any

#: C0 and C1 controls and DEL; the Unicode line and paragraph separators; the bidi marks, embeddings, overrides
#: and isolates (U+061C, U+200E-U+200F, U+202A-U+202E, U+2066-U+2069).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or f"\\u{ord(char):04x}"


def escape_controls(text: str) -> str:
    """`text` with every control, line-separator and bidi character written as an escape (`\\n`, `\\u001b`):
    the result is one line that shows what the text holds. Text without any comes back as it is.

    The common case costs one `str.isprintable()`, a C loop about 1.5x as fast as the regex search: every
    character `_UNSAFE` matches is a control, format or line/paragraph separator character, which Python never
    calls printable (tests/core/test_hostile_logs.py checks every code point). Printable text therefore has none;
    text that is not (a no-break space, a soft hyphen) gets the exact search."""
    if text.isprintable() or _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_escape, text)


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


class EscapingFormatter(logging.Formatter):
    """A logging.Formatter whose records are one line each, whatever their message holds (see the module).

    It also keeps the date and time part of its last record's second: a busy worker writes hundreds of lines a
    second (the logging sink, one per event), and `time.localtime` with `strftime` for each were about a third of
    a record's formatting. The text is the same as logging.Formatter's, milliseconds included."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: (second, datefmt, its text) of the latest record formatted.
        self._second: tuple[int, str | None, str] = (-1, None, "")
        #: Whether the format names the time (logging.Formatter asks its style again for every record).
        self._uses_time = self.usesTime()

    def format(self, record: logging.LogRecord) -> str:
        """logging.Formatter.format's own steps, for the usual record (no exception or stack to append) in fewer
        calls; any other record goes through logging.Formatter.format itself."""
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        record.message = record.getMessage()
        if self._uses_time:
            record.asctime = self.formatTime(record, self.datefmt)
        return escape_controls(self._style.format(record))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second, fmt, text = self._second
        if second != int(record.created) or fmt != datefmt:
            # Formatter.formatTime's own text for this second, without its milliseconds (added below).
            text = time.strftime(datefmt or self.default_time_format, self.converter(record.created))
            self._second = (int(record.created), datefmt, text)
        if datefmt or not self.default_msec_format:
            return text
        return self.default_msec_format % (text, record.msecs)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))

    def formatException(self, ei: ExcInfo) -> str:
        exc_type, exc, tb = ei
        if exc_type is None or exc is None:
            return super().formatException(ei)
        messages = _exception_lines(exc)
        chunks = traceback.format_exception(exc_type, exc, tb)
        return "".join(_escape_chunk(chunk) if chunk in messages else chunk for chunk in chunks).rstrip("\n")


def _exception_lines(exc: BaseException) -> set[str]:
    """The `Type: message` parts traceback prints for `exc` and the exceptions chained to it: the only parts of
    a traceback whose text may come from a producer."""
    found: set[str] = set()
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        found.update(traceback.format_exception_only(type(current), current))
        pending += [current.__cause__, current.__context__]
    return found


def _escape_chunk(chunk: str) -> str:
    """An exception's `Type: message\\n` part with the message's own line breaks and controls escaped."""
    body = chunk[:-1] if chunk.endswith("\n") else chunk
    return escape_controls(body) + ("\n" if chunk.endswith("\n") else "")


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stream handler `configure_logging` installs: a `logging.StreamHandler` that can also write a batch of
    records at once (`emit_all`), for a caller with many lines in hand (the logging sink writes one per event).

    Why: handing a record to `Logger.handle` costs several times what its line costs (the walk up the loggers, the
    handler's lock, filter, a `write` and a `flush` each: a system call per line on a line-buffered stderr).
    `emit_all` runs the same filters and formatter on each record and writes the batch's text with one `write`
    under one lock: the same bytes, in the same order."""

    def emit_all(self, records: Iterable[logging.LogRecord]) -> None:
        """Filter and format each record as `handle` would, then write them all at once."""
        texts: list[str] = []
        record = None
        # What `filter` and `format` would look up for every record, looked up once for the batch.
        checks = [f.filter if hasattr(f, "filter") else f for f in self.filters]
        format_record = (self.formatter or logging.Formatter()).format
        terminator = self.terminator
        try:
            for record in records:
                for check in checks:
                    kept = check(record)
                    if not kept:
                        break
                    if isinstance(kept, logging.LogRecord):  # (Python 3.12 on: a filter may return a changed record)
                        record = kept
                else:
                    texts.append(format_record(record) + terminator)
            if texts:
                with self.lock:  # type: ignore[union-attr]  # (createLock made it)
                    self.stream.write("".join(texts))
                    self.flush()
        except RecursionError:
            raise
        except Exception:  # as StreamHandler.emit: reported on stderr by logging's own rule, never raised
            if record is not None:
                self.handleError(record)


def batch_handler(logger: logging.Logger, level: int) -> LineHandler | None:
    """The one handler `logger`'s records at `level` reach when that is a LineHandler and nothing else would see
    them (no filter on `logger`, no other handler up to the root or the first logger that does not propagate):
    then `emit_all` on it writes what `logger.handle` would, record by record. None otherwise (the caller then
    hands each record to `logger.handle`)."""
    if logger.disabled or logger.filters:
        return None
    found: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        found += current.handlers
        if len(found) > 1 or not current.propagate:
            break
        current = current.parent
    if len(found) != 1 or type(found[0]) is not LineHandler or level < found[0].level:
        return None
    return found[0]
