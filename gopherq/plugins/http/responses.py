"""What a response asks of the next request: a redirect's next hop, and how long Retry-After says to wait.

Kept apart from the executor (plugins/http/__init__.py, which re-exports both) so each reads on its own.
"""

from __future__ import annotations

import email.utils
import time

from gopherq.plugins.http.wire import Outgoing

MAX_REDIRECTS = 20
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


def redirect_request(previous: Outgoing, status: int, location: str) -> Outgoing:
    """The next request of a redirect chain, with the usual user-agent rules: 303 (and 301/302 after a POST)
    become a body-less GET; credentials are not sent to another origin. Location is resolved as httpx resolves
    it (wire.Target.join)."""
    target = previous.target.join(location)
    method = previous.method
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method = "GET"
    dropped = {"host"}
    if target.origin != previous.target.origin:
        dropped |= {"authorization", "cookie"}
    content = previous.content if method == previous.method else b""
    if method != previous.method:
        dropped |= {"content-length", "content-type", "transfer-encoding"}
    headers = {name: value for name, value in previous.headers.items() if name.lower() not in dropped}
    return Outgoing(method, target, headers, content, previous.timeout)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Parse Retry-After: delta-seconds or an HTTP date. None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
