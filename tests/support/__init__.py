"""Helpers and fixtures shared by the tests; tests/conftest.py registers the fixtures with pytest."""
