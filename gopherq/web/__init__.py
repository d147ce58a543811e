"""The `gopherq web` server: one aiohttp application for the dashboard, health probes, metrics and the API.

The application's modules load on first use of `create_app` or `AREAS`: a worker imports `gopherq.web.exposition`
(its metrics) without the dashboard's pages and templates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gopherq.web.app import AREAS, create_app

__all__ = ["AREAS", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from gopherq.web import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
