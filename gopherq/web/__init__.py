"""The `gopherq web` server: one aiohttp application for the dashboard, health probes, metrics and the API."""

from gopherq.web.app import AREAS, create_app

__all__ = ["AREAS", "create_app"]
