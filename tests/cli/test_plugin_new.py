"""`gopherq plugin new`, plugins loaded from folders, and docs/plugins.md's two walk-throughs run as written.

The walk-through test reads the guide's marked blocks in order and does what they say in an empty folder: `<!--
run -->` runs a shell block (which must succeed), `<!-- run: background -->` starts one and leaves it running
(the worker; the next one stops it), `<!-- write: F -->` writes F, and `<!-- file: examples/P -->` writes P (the
example's file, replacing what `plugin new` made). The only thing added is the environment: the test Redis and a
queue of its own (GOPHERQ_REDIS__URL, GOPHERQ_QUEUE__NAME), and the virtualenv's bin first on PATH.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gopherq.core.errors import ConfigError, PluginError
from gopherq.core.plugins import load_plugins
from gopherq.core.settings import load_settings
from gopherq.scaffold import ScaffoldError, create, project_names, render
from tests.support.common import GOPHERQ, REPO, cli_env, write_config

GUIDE = REPO / "docs" / "plugins.md"
BIN = Path(sys.executable).parent

#: A marked block of the guide: the marker's words, then the fenced block's body.
MARKED = re.compile(
    r"<!-- (?P<marker>run|run: background|write: \S+|file: \S+) -->\n```\w*\n(?P<body>.*?)^```$", re.S | re.M
)


@dataclass
class Step:
    marker: str
    body: str


def guide_steps() -> list[Step]:
    return [Step(match["marker"], match["body"]) for match in MARKED.finditer(GUIDE.read_text())]


def shell_env(redis_url: str, queue: str) -> dict[str, str]:
    return cli_env(
        {
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "GOPHERQ_REDIS__URL": redis_url,
            "GOPHERQ_QUEUE__NAME": queue,
            "GOPHERQ_TEST_REDIS_URL": redis_url,
        }
    )


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_the_guide_walks_through_both_plugins_from_plugin_new_to_a_running_worker(
    tmp_path: Path, redis_url: str, queue_name: str
) -> None:
    env = shell_env(redis_url, queue_name)
    steps = guide_steps()
    assert [step.marker for step in steps].count("run: background") == 2
    worker: subprocess.Popen[bytes] | None = None
    outputs: list[tuple[str, str]] = []
    logs: list[Path] = []
    try:
        for step in steps:
            if step.marker.startswith("file: "):
                target = tmp_path / step.marker.removeprefix("file: examples/")
                assert target.is_file(), f"{target.relative_to(tmp_path)}: the guide replaces a file plugin new made"
                if target.name == "pyproject.toml":  # only its description differs from what plugin new wrote
                    assert re.sub(r'(?m)^description = ".*"$', "", target.read_text()) == re.sub(
                        r'(?m)^description = ".*"$', "", step.body
                    )
                target.write_text(step.body)
            elif step.marker.startswith("write: "):
                (tmp_path / step.marker.removeprefix("write: ")).write_text(step.body)
            elif step.marker == "run: background":
                stop(worker)
                logs.append(tmp_path / f"worker-{len(logs)}.log")
                with logs[-1].open("wb") as log:
                    worker = subprocess.Popen(
                        ["bash", "-c", f"exec {step.body.strip()}"],
                        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                    )  # fmt: skip
            else:
                proc = subprocess.run(
                    ["bash", "-e", "-c", step.body], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
                )
                worker_log = logs[-1].read_text(errors="replace") if logs else ""
                assert proc.returncode == 0, f"{step.body}\n{proc.stdout}\n{proc.stderr}\n{worker_log}"
                outputs.append((step.body.strip(), proc.stdout))
    finally:
        stop(worker)
    enqueued = [out for body, out in outputs if body.startswith("gopherq enqueue")]
    records = [json.loads(out.partition("\n")[2]) for out in enqueued]
    assert [(record["status"], record["result"]) for record in records] == [("succeeded", 5), ("succeeded", 42)]
    assert any("passed" in out for body, out in outputs if "pytest" in body)
    # The sink's file, drained when the second worker stopped: the second task's events, in order.
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [line["event"] for line in lines if line.get("task_id") == records[1]["id"]] == [
        "task.dequeued",
        "task.started",
        "task.succeeded",
    ]
    assert "from " + str(tmp_path / "gopherq-jsonl") in run_plugins(tmp_path, env)


def run_plugins(cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [GOPHERQ, "plugins", "-c", "gopherq.toml"], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# -- gopherq plugin new ------------------------------------------------------------------------------------------------


def test_plugin_new_makes_projects_whose_own_tests_pass_and_that_are_lint_and_type_clean(
    tmp_path: Path, redis_url: str
) -> None:
    env = cli_env({"GOPHERQ_TEST_REDIS_URL": redis_url})
    for args in (["sql_audit"], ["counts", "--sink"]):
        proc = subprocess.run([GOPHERQ, "plugin", "new", *args], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    projects = [tmp_path / "gopherq-sql-audit", tmp_path / "gopherq-counts"]
    assert "created gopherq-sql-audit/src/gopherq_sql_audit/__init__.py" in proc.stdout or projects[0].is_dir()
    for project in projects:
        tests = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
            cwd=project, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert tests.returncode == 0, tests.stdout + tests.stderr
        assert "3 passed" in tests.stdout, tests.stdout  # the Redis test ran too
    sources = [str(project / part) for project in projects for part in ("src", "tests")]
    for command in (["ruff", "check", *sources], ["ruff", "format", "--check", *sources]):
        lint = subprocess.run([str(BIN / command[0]), *command[1:]], capture_output=True, text=True, cwd=tmp_path)
        assert lint.returncode == 0, lint.stdout + lint.stderr
    modules = [str(projects[0] / "src" / "gopherq_sql_audit"), str(projects[1] / "src" / "gopherq_counts")]
    # From the repository, with its settings (strict), as the examples are checked: mypy does not follow the
    # editable install of gopherq.
    typed = subprocess.run([str(BIN / "mypy"), *modules], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert typed.returncode == 0, typed.stdout + typed.stderr


@pytest.mark.parametrize(("example", "kind"), [("gopherq-pycall", "executor"), ("gopherq-jsonl", "sink")])
def test_the_examples_pyproject_is_what_plugin_new_writes_but_for_its_description(example: str, kind: str) -> None:
    name = example.removeprefix("gopherq-")
    generated = render(name, kind)["pyproject.toml"]
    ours = (REPO / "examples" / example / "pyproject.toml").read_text()
    describe = re.compile(r'(?m)^description = ".*"$')
    assert describe.sub("", generated) == describe.sub("", ours)


def test_names_are_checked_and_an_existing_folder_is_never_touched(tmp_path: Path) -> None:
    assert project_names("sql_audit") == {
        "name": "sql_audit",
        "distribution": "gopherq-sql-audit",
        "module": "gopherq_sql_audit",
        "class_name": "SqlAudit",
    }
    for bad in ("Sql", "sql-audit", "1sql", "", "x" * 41):
        with pytest.raises(ScaffoldError, match="plugin name"):
            project_names(bad)
    with pytest.raises(ScaffoldError, match="unknown plugin kind"):
        render("sql", "exporter")
    (tmp_path / "gopherq-sql").mkdir()
    with pytest.raises(ScaffoldError, match="already exists"):
        create("sql", "executor", tmp_path)
    assert list((tmp_path / "gopherq-sql").iterdir()) == []
    proc = subprocess.run([GOPHERQ, "plugin", "new", "Bad-Name"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("gopherq: error: plugin name 'Bad-Name': ") and proc.stderr.count("\n") == 1


def test_the_templates_ship_in_the_wheel() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"templates/**/*"' in pyproject
    templates = REPO / "gopherq" / "templates" / "plugin"
    assert {path.name for path in templates.iterdir()} >= {"pyproject.toml.tmpl", "executor.py.tmpl", "sink.py.tmpl"}


# -- plugins from folders --------------------------------------------------------------------------------------------

AUDIT = """
from gopherq import hookimpl


class Sink:
    def handle(self, events):
        pass


@hookimpl
def gopherq_register_sinks(register):
    register("audit", Sink())
"""

UPPER = """
from gopherq import hookimpl


class Upper:
    async def execute(self, task, context):
        return task.fields["text"].upper()


@hookimpl
def gopherq_register_executors(register):
    register("upper", Upper())
"""


def settings_with(tmp_path: Path, **plugins: Any) -> Any:
    return load_settings(write_config(tmp_path, ""), {"plugins": plugins}, environ={})


def test_a_folder_of_modules_loads_each_as_a_plugin_named_after_it(tmp_path: Path) -> None:
    folder = tmp_path / "plugins"
    (folder / "gopherq_upper").mkdir(parents=True)
    (folder / "gopherq_upper" / "__init__.py").write_text(UPPER)
    (folder / "audit_mod_21.py").write_text(AUDIT)
    (folder / "_private.py").write_text("raise RuntimeError('not a plugin')\n")
    (folder / "notes.txt").write_text("not a module\n")
    manager = load_plugins(settings_with(tmp_path, paths=["plugins"]), sinks=True)
    assert manager.info["upper"].path == str(folder) and manager.info["upper"].module == "gopherq_upper"
    assert manager.info["audit_mod_21"].sinks == ["audit"]
    assert "upper" in manager.executors and not manager.info["upper"].builtin


def test_a_project_folder_loads_its_entry_points_from_src(tmp_path: Path) -> None:
    project = create("paths_demo", "executor", tmp_path)
    manager = load_plugins(settings_with(tmp_path, paths=[str(project)]))
    info = manager.info["paths_demo"]
    assert (info.path, info.entry_point, info.distribution) == (str(project), "gopherq_paths_demo", None)
    assert info.label == f"plugin 'paths_demo' (from {project}, gopherq_paths_demo)"
    assert "paths_demo" in manager.executors


def test_a_bad_folder_a_duplicate_and_a_disabled_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"plugins.paths: .*nowhere: not a directory"):
        load_plugins(settings_with(tmp_path, paths=["nowhere"]))
    (tmp_path / "empty_project").mkdir()
    (tmp_path / "empty_project" / "pyproject.toml").write_text('[project]\nname = "x"\n')
    with pytest.raises(ConfigError, match=r"declares no \[project.entry-points.gopherq\]"):
        load_plugins(settings_with(tmp_path, paths=["empty_project"]))
    folder = tmp_path / "dups"
    folder.mkdir()
    (folder / "http.py").write_text(UPPER)
    with pytest.raises(PluginError, match=r"^plugin 'http' \(from .*dups, http\): duplicate plugin name"):
        load_plugins(settings_with(tmp_path, paths=["dups"]))
    manager = load_plugins(settings_with(tmp_path, paths=["dups"], disable=["http"]))
    assert "http" not in manager.info and "http" in manager.blocked


def test_plugins_dir_and_the_environment_reach_every_command(tmp_path: Path) -> None:
    project = create("dir_demo", "sink", tmp_path)
    by_flag = subprocess.run(
        [GOPHERQ, "--plugins-dir", str(project), "plugins", "--json"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert by_flag.returncode == 0, by_flag.stderr
    rows = {row["name"]: row for row in json.loads(by_flag.stdout)}
    assert rows["dir_demo"]["path"] == str(project) and rows["dir_demo"]["sinks"] == ["dir_demo"]
    by_env = subprocess.run(
        [GOPHERQ, "plugins"], cwd=tmp_path, env=cli_env({"GOPHERQ_PLUGIN_PATHS": "gopherq-dir-demo"}),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert f"dir_demo  from {project}  module gopherq_dir_demo" in by_env.stdout, by_env.stderr
    missing = subprocess.run(
        [GOPHERQ, "--plugins-dir", "nowhere", "plugins"], cwd=tmp_path, env=cli_env(), capture_output=True, text=True
    )
    assert missing.returncode == 2 and "nowhere" in missing.stderr


def test_a_plugin_command_from_a_plugins_dir_is_available(tmp_path: Path) -> None:
    folder = tmp_path / "cmds"
    folder.mkdir()
    (folder / "hello21.py").write_text(
        "import click\nfrom gopherq import hookimpl\n\n\n@hookimpl\ndef gopherq_register_commands(cli):\n"
        "    @cli.command('hello21')\n    def hello():\n        click.echo('hello from a folder')\n"
    )
    proc = subprocess.run(
        [GOPHERQ, "--plugins-dir", str(folder), "hello21"], cwd=tmp_path, env=cli_env(), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello from a folder\n"
