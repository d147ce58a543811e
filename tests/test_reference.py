"""docs/reference.md is generated from the source (docs/gen_reference.py) and must be what the generator writes
now; the sources it reads must say what it promises: where each hook runs, and exactly the events the code emits."""

from __future__ import annotations

import importlib.util
import re
from types import ModuleType

from gopherq.core import hookspecs
from gopherq.core.events import EVENTS
from tests.support.common import REPO


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", REPO / "docs" / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_reference_is_what_the_generator_writes() -> None:
    expected = generator().render()
    assert (REPO / "docs" / "reference.md").read_text() == expected, (
        "docs/reference.md is out of date: run `python docs/gen_reference.py` and commit it"
    )


def test_the_reference_has_every_part_the_plugin_author_needs() -> None:
    text = (REPO / "docs" / "reference.md").read_text()
    for heading in (
        "### `gopherq_register_executors`",
        "### `Executor`",
        "### `Sink`",
        "### The events",
        "### `TaskStatus`",
        "#### `AsyncClient.enqueue`",
        "#### `DeadLetters.requeue`",
        "### `PluginHarness`",
        "#### `RedisQueue.push_raw`",
        "#### `gopherq_queue`",
    ):
        assert f"\n{heading}\n" in text, heading
    assert ":::" not in text  # no directive that only a docs build would fill in


def test_every_hook_says_which_processes_run_it() -> None:
    for name, spec in vars(hookspecs).items():
        if name.startswith("gopherq_"):
            assert "\n    Runs in: " in (spec.__doc__ or ""), f"{name}: its docstring has no 'Runs in:' paragraph"


def test_every_hook_docstring_has_the_same_skeleton() -> None:
    for name, spec in vars(hookspecs).items():
        if name.startswith("gopherq_"):
            doc = spec.__doc__ or ""
            places = [doc.find(f"\n    {part} ") for part in hookspecs.DOCSTRING_PARTS]
            assert -1 not in places, f"{name}: its docstring lacks one of {hookspecs.DOCSTRING_PARTS}"
            assert places == sorted(places), f"{name}: the parts of its docstring are not in the usual order"


#: The first string literal of an `.emit(...)` or `Decision(...)` call, or of an outcomes.py decision that names its
#: event (`policy.release(...)`, `policy.defer(...)`): the event's name.
EMITTED = re.compile(r'(?:\.emit|Decision|\.release|\.defer)\((?:[^()"]|\([^()]*\))*?"([a-z]+\.[a-z_]+)"')


def test_every_event_the_code_emits_is_in_the_catalogue() -> None:
    emitted: set[str] = set()
    for path in (REPO / "gopherq").rglob("*.py"):
        emitted |= set(EMITTED.findall(path.read_text()))
    for path in (REPO / "gopherq" / "core" / "lua").glob("*.lua"):  # flow state changes become host.<name>
        emitted |= {f"host.{name}" for name in re.findall(r"'((?:circuit|rate)_[a-z_]+)'", path.read_text())}
    assert {"task.enqueued", "task.failed", "task.released", "worker.stopped", "host.circuit_opened"} <= emitted
    assert emitted == set(EVENTS)  # and every event of the catalogue is emitted somewhere
