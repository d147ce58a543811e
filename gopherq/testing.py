"""Helpers for testing GoPherQ plugins (a pytest plugin)."""
