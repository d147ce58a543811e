"""Callables the tests run as `pycall` tasks (this directory is on sys.path while pytest runs)."""

from __future__ import annotations

import threading

from gopherq import PermanentFailure, RetryTask

calls: list[str] = []


def thread_name() -> str:
    return threading.current_thread().name


async def add_async(a: int, b: int) -> int:
    return a + b


def greet(name: str, *, punctuation: str = "!") -> str:
    return f"hello {name}{punctuation}"


def not_json() -> object:
    return object()


def boom() -> None:
    raise ValueError("boom")


def slow_down() -> None:
    raise RetryTask("come back later", delay=7.5)


def give_up() -> None:
    raise PermanentFailure("this can never work")


def record(tag: str) -> int:
    calls.append(tag)
    return len(calls)


class Jobs:
    @staticmethod
    def double(x: int) -> int:
        return 2 * x


NOT_CALLABLE = 42
