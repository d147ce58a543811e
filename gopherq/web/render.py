"""Rendering pages: the jinja2 environment, its filters, and the one function handlers call to answer in HTML.

Autoescaping is on for every template. Anything that came from Redis (envelopes, results, errors, event data) goes
through the `masked` filter before it is shown, although the inspection layer masks it already: a page is an exit
point, and masking twice costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from gopherq.core.masking import Masker
from gopherq.core.whereabouts import where_text
from gopherq.web.security import auth_method, can_act, csrf_token, set_csrf_cookie
from gopherq.web.state import ENV_KEY, POLL_KEY

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

#: The vendored htmx build (see static/README.txt); templates reference it by this name.
HTMX_FILE = "htmx-2.0.11.min.js"


def build_environment(masker: Masker) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        masked=masker.value,
        pretty=pretty_json,
        age=age,
        ago=ago,
        duration=duration,
        stamp=stamp,
        clock=clock,
        number=number,
        percent=percent,
        whereabouts=lambda where: where_text(where, stamp),
        ident=ident,
    )
    env.globals["percent"] = percent
    env.globals["inf"] = float("inf")
    return env


def ident(value: Any) -> str:
    """A short, stable HTML id made from any value (e.g. an action's URL and fields): live fragments keep an
    element of that id as it is across their swaps (`hx-preserve`), so an open confirmation stays open."""
    return "i" + hashlib.sha256(str(value).encode("utf-8", "replace")).hexdigest()[:16]


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, default=str, ensure_ascii=False)


def age(stamp_s: Any, now: float | None = None) -> str:
    """How long ago a Unix time was, in the largest sensible unit ("4 s", "12 min", "3 h", "2 d")."""
    if not isinstance(stamp_s, (int, float)) or stamp_s <= 0:
        return "-"
    return duration((now if now is not None else time.time()) - stamp_s)


def ago(stamp_s: Any) -> str:
    """`age` followed by "ago", or "-" when the time is unknown."""
    text = age(stamp_s)
    return text if text == "-" else f"{text} ago"


def duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    seconds = max(0.0, float(seconds))
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def stamp(stamp_s: Any) -> str:
    """A Unix time as UTC ISO-8601 to the second (the same on every viewer's screen)."""
    if not isinstance(stamp_s, (int, float)) or stamp_s <= 0:
        return "-"
    return datetime.fromtimestamp(stamp_s, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def clock(stamp_s: Any) -> str:
    """A Unix time as UTC time of day to the millisecond, for timelines (the date is in `stamp`)."""
    if not isinstance(stamp_s, (int, float)) or stamp_s <= 0:
        return "-"
    return datetime.fromtimestamp(stamp_s, timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def number(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return f"{value:,}".replace(",", "\u2009")


def percent(part: Any, whole: Any) -> str:
    if not isinstance(part, (int, float)) or not isinstance(whole, (int, float)) or whole <= 0:
        return "-"
    return f"{100.0 * part / whole:.1f} %"


def render_html(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    """Render `template` with the request's common context (CSRF token, poll interval) and answer with it."""
    env = request.app[ENV_KEY]
    token, new = csrf_token(request)
    full = {
        "request": request,
        "csrf_token": token,
        "poll_seconds": request.app[POLL_KEY],
        "htmx_file": HTMX_FILE,
        "auth": auth_method(request),
        "can_act": can_act(request),
        "now": time.time(),
        **context,
    }
    text = env.get_template(template).render(full)
    response = web.Response(text=text, status=status, content_type="text/html", charset="utf-8")
    if new is not None:
        set_csrf_cookie(request, response, new)
    return response


def login_page(request: web.Request) -> web.Response:
    """The login page (401), back to the page asked for once logged in."""
    return render_html(request, "login.html", {"next": request.path_qs, "failed": False}, status=401)
