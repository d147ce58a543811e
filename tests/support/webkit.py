"""Helpers of the dashboard tests: a `gopherq web` subprocess, and headless Chromium driven by selenium.

The browser is Debian's `chromium` with its `chromium-driver` (`.ci/run` installs both); selenium is pointed at
them explicitly, so Selenium Manager never tries to download a browser or a driver.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.common import free_port, wait_until
from tests.support.workers import WorkerProcess

CHROMIUM = os.environ.get("GOPHERQ_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("GOPHERQ_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")

#: Flags for a quiet, sandbox-free headless browser that talks to nothing but the page under test.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
    "--password-store=basic",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5) -> tuple[int, str]:
    """GET with the standard library: (status, body), errors included."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except OSError:
        return 0, ""


class WebServer:
    """A running `gopherq web` subprocess and its base URL."""

    def __init__(self, process: WorkerProcess, port: int) -> None:
        self.process = process
        self.port = port
        self.base = f"http://127.0.0.1:{port}"

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture
def web_server(worker_process: Callable[..., WorkerProcess]) -> Callable[..., WebServer]:
    """`web_server(config_path)` starts `gopherq web -c config --port <free>` and waits for /healthz."""

    def start(config: Path, *extra: str) -> WebServer:
        port = free_port()
        process = worker_process(["web", "-c", str(config), "--port", str(port), *extra])
        server = WebServer(process, port)

        def up() -> bool:
            if process.proc.poll() is not None:
                pytest.fail(f"gopherq web exited {process.proc.returncode}:\n{process.output}")
            return http_get(server.url("/healthz"), timeout=1)[0] == 200

        wait_until(up, timeout=30, interval=0.1, what="gopherq web to answer /healthz")
        return server

    return start


def browser_or_skip() -> None:
    """Skip (with the reason) when no browser is installed; `.ci/run` installs one."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        pytest.skip(f"headless browser tests need {' and '.join(missing)} (apt-get install chromium chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("headless browser tests need selenium (the test extra)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per test module, with a fresh profile; phone or desktop size set per test."""
    browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="gopherq-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console messages, CSP violations included
    service = Service(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
