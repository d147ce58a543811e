"""Plugin discovery through real entry points: small distributions written here, pip-installed into a directory.

In-process tests put that directory on sys.path (importlib.metadata finds the dist-info there); CLI tests run
`gopherq` with PYTHONPATH set to it. Nothing is installed into the shared virtualenv.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from gopherq import PluginError
from gopherq.core.errors import ConfigError
from gopherq.core.plugins import PluginManager, load_plugins
from gopherq.core.settings import load_settings
from tests.plugins.test_examples import clean_env
from tests.support.common import GOPHERQ, write_config

GOOD = '''
"""A well-behaved third-party plugin: settings with a secret, a sync executor, a CLI command."""
import threading
from typing import Any

from pydantic import SecretStr

from gopherq import PluginSettings, hookimpl


class GoodSettings(PluginSettings):
    token: SecretStr | None = None
    level: int = 1


class GoodExecutor:
    def __init__(self, level: int) -> None:
        self.level = level

    def execute(self, task: Any, context: Any) -> dict[str, Any]:
        return {"level": self.level, "thread": threading.current_thread().name}


@hookimpl
def gopherq_register_settings(register):
    register(GoodSettings)


@hookimpl
def gopherq_register_executors(register, settings):
    register("good", GoodExecutor(settings.plugin("good").level))
    register("http", GoodExecutor(0), replace=True)


@hookimpl
def gopherq_register_commands(cli):
    @cli.command("good-hello")
    def hello() -> None:
        """Say hello."""
        print("hello from good")
'''

BROKEN = """
raise ImportError("gq_broken needs the 'frobnicate' package\\n(pip install frobnicate)")
"""

TYPO = """
from gopherq import hookimpl


@hookimpl
def gopherq_register_executor(register, settings):
    pass
"""

DUP = """
from gopherq import hookimpl


@hookimpl
def gopherq_register_executors(register):
    register("dup", object())
"""


def write_dist(root: Path, dist: str, version: str, entry_point: str, module: str, source: str) -> Path:
    path = root / dist
    (path / "src").mkdir(parents=True)
    (path / "src" / f"{module}.py").write_text(textwrap.dedent(source))
    (path / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=77"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "{version}"

        [project.entry-points.gopherq]
        {entry_point} = "{module}"

        [tool.setuptools]
        package-dir = {{"" = "src"}}
        py-modules = ["{module}"]
        """)
    )
    return path


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two install directories: `main` (gq-good, gq-broken, gq-typo) and `dup` (gq-dup, whose entry point is
    also named `good`). Both pip runs go in parallel."""
    root = tmp_path_factory.mktemp("dists")
    sources = root / "sources"
    main = [
        write_dist(sources, "gq-good", "1.2.3", "good", "gq_good", GOOD),
        write_dist(sources, "gq-broken", "0.1", "broken", "gq_broken", BROKEN),
        write_dist(sources, "gq-typo", "0.1", "typo", "gq_typo", TYPO),
    ]
    dup = [write_dist(sources, "gq-dup", "0.2", "good", "gq_dup", DUP)]
    targets = {"main": root / "main", "dup": root / "dup"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--target",
                str(targets[name]),
                *map(str, paths),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for name, paths in (("main", main), ("dup", dup))
    ]
    for proc in procs:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output.decode()
    return targets


@pytest.fixture
def installed(dists: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.syspath_prepend(str(dists["main"]))
    return dists


def load(**plugins: Any) -> PluginManager:
    return load_plugins(load_settings(None, {"plugins": plugins}, environ={}), sinks=True)


def test_pinning_loads_only_the_named_third_party_plugins_and_every_builtin(installed: dict[str, Path]) -> None:
    manager = load(load=["good"])
    assert set(manager.info) == {"http", "functions", "logging", "webhook", "stream", "metrics", "otel", "good"}
    good = manager.info["good"]
    assert (good.distribution, good.version, good.module, good.entry_point) == (
        "gq-good",
        "1.2.3",
        "gq_good",
        "gq_good",
    )
    assert good.executors == ["good", "http"] and good.settings == ["good"] and not good.builtin
    # Found before GoPherQ's own entry points (its directory is first on sys.path), it is still loaded after the
    # built-ins, so its replace=True wins over the built-in `http` executor.
    assert manager.executors["http"].plugin == "good"
    assert good.hooks == ["gopherq_register_commands", "gopherq_register_executors", "gopherq_register_settings"]
    assert {"broken", "typo"} <= manager.blocked


def test_an_import_failure_stops_start_up_naming_plugin_distribution_and_cause(installed: dict[str, Path]) -> None:
    with pytest.raises(PluginError) as caught:
        load(load=["broken"])
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("plugin 'broken' (distribution gq-broken 0.1, gq_broken): failed to import: ImportError")
    assert "needs the 'frobnicate' package (pip install frobnicate)" in message


def test_an_unknown_hook_stops_start_up_with_a_did_you_mean(installed: dict[str, Path]) -> None:
    with pytest.raises(PluginError, match=r"^plugin 'typo' \(distribution gq-typo 0.1, gq_typo\): ") as caught:
        load(load=["typo"])
    assert str(caught.value).endswith(
        "implements unknown hook gopherq_register_executor (did you mean gopherq_register_executors?)"
    )


def test_two_distributions_claiming_one_plugin_name_stop_start_up(
    installed: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(installed["dup"]))
    with pytest.raises(PluginError, match="duplicate plugin name") as caught:
        load(load=["good"])
    assert "gq-good 1.2.3" in str(caught.value) and "gq-dup 0.2" in str(caught.value)
    # Disabling the name is a way out: neither is loaded, nothing is ambiguous.
    manager = load(load=["good"], disable=["good"])
    assert "good" not in manager.info


def test_disable_blocks_third_party_and_builtin_plugins_alike(installed: dict[str, Path]) -> None:
    manager = load(disable=["broken", "typo", "http", "webhook"])
    assert set(manager.info) == {"logging", "stream", "metrics", "otel", "functions", "good"}
    assert manager.executors["http"].plugin == "good"  # only the replacement: the built-in is not loaded
    assert {"broken", "typo", "http", "webhook"} <= manager.blocked


def test_disabled_plugins_are_not_even_added_directly() -> None:
    settings = load_settings(None, {"plugins": {"disable": ["extra"]}}, environ={})
    manager = load_plugins(settings, extra={"extra": object()})
    assert "extra" not in manager.info


def test_disabling_a_plugin_that_is_not_installed_warns_with_a_did_you_mean(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gopherq.core.plugin_info._WARNED", set())  # warned once per process: forget earlier tests'
    with caplog.at_level(logging.WARNING, logger="gopherq.core.plugins"):
        load(disable=["webhok"])
        load(disable=["webhok"])
    assert caplog.text.count("disabled plugin 'webhok' is not installed (did you mean 'webhook'?)") == 1


def test_pinning_a_plugin_that_is_not_installed_is_an_error(installed: dict[str, Path]) -> None:
    with pytest.raises(PluginError, match=r"not installed: nope \(installed: .*good"):
        load(load=["good", "nope"])


def test_plugin_settings_errors_name_the_key_the_file_and_the_expected_value(
    installed: dict[str, Path], tmp_path: Path
) -> None:
    config = write_config(tmp_path, '[plugins]\nload = ["good"]\n\n[plugins.good]\nlevel = "high"\n')
    with pytest.raises(ConfigError) as caught:
        load_plugins(load_settings(config, environ={}))
    assert str(caught.value) == (
        f"{config}: plugins.good.level: Input should be a valid integer, unable to parse string as an integer"
        " (got 'high')"
    )
    config.write_text('[plugins]\nload = ["good"]\n\n[plugins.good]\nlevle = 2\n')
    with pytest.raises(ConfigError, match=r"plugins.good.levle: unknown key \(did you mean 'plugins.good.level'\?\)"):
        load_plugins(load_settings(config, environ={}))


def run_cli(dists: dict[str, Path], *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GOPHERQ, *args],
        env=clean_env(PYTHONPATH=str(dists["main"]), **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_reports_a_broken_plugin_in_one_line_and_exits_2(dists: dict[str, Path], tmp_path: Path) -> None:
    config = write_config(tmp_path, '[redis]\nurl = "redis://127.0.0.1:1/0"\n')
    proc = run_cli(dists, "run", "-c", str(config), GOPHERQ_LOAD_PLUGINS="good,broken")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("gopherq: error: plugin 'broken' (distribution gq-broken 0.1, gq_broken)")


def test_cli_lists_a_third_party_plugin_and_runs_its_command(dists: dict[str, Path]) -> None:
    listing = run_cli(dists, "plugins", "--json", GOPHERQ_LOAD_PLUGINS="good")
    assert listing.returncode == 0, listing.stderr
    good = next(row for row in json.loads(listing.stdout) if row["name"] == "good")
    assert good["distribution"] == "gq-good" and good["version"] == "1.2.3"
    assert good["commands"] == ["good-hello"] and good["executors"] == ["good", "http"]
    text = run_cli(dists, "plugins", GOPHERQ_LOAD_PLUGINS="good")
    assert "good  gq-good 1.2.3  module gq_good" in text.stdout
    assert "broken  (installed, not loaded" in text.stdout
    hello = run_cli(dists, "good-hello", GOPHERQ_LOAD_PLUGINS="good")
    assert (hello.returncode, hello.stdout) == (0, "hello from good\n")


def test_env_overrides_plugin_settings_and_gopherq_config_masks_secrets(dists: dict[str, Path]) -> None:
    env = {"GOPHERQ_LOAD_PLUGINS": "good", "GOPHERQ_PLUGINS__GOOD__TOKEN": "s3cret-value"}
    proc = run_cli(dists, "config", **env, GOPHERQ_PLUGINS__GOOD__LEVEL="7")
    assert proc.returncode == 0, proc.stderr
    assert "s3cret-value" not in proc.stdout
    good = json.loads(proc.stdout)["plugins"]["good"]
    assert good == {"token": "**********", "level": 7}
    bad = run_cli(dists, "config", **env, GOPHERQ_PLUGINS__GOOD__LEVEL="seven")
    assert bad.returncode == 2
    assert bad.stderr.startswith(
        "gopherq: error: environment variable GOPHERQ_PLUGINS__GOOD__LEVEL: plugins.good.level: Input should be"
    )
    assert bad.stderr.count("\n") == 1
