"""Fixtures of the core tests: `settings` (function tasks loaded) and `api` (a real `/v1` server on loopback),
shared by the tests that enqueue through every entry point."""

from tests.support.functions_api import api, settings  # noqa: F401  (fixtures)
