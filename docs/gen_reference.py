"""Write docs/reference.md, the API reference, from the source of truth: the signatures and docstrings of the public
API, the hook specs, the executor and sink protocols, the events catalogue (gopherq.core.events.EVENTS) and the
test kit. The page is plain Markdown, so it reads the same in a checkout, on the repository host and on the site.

    python docs/gen_reference.py           # rewrite docs/reference.md
    python docs/gen_reference.py --check   # exit 1 when docs/reference.md is not what this would write

tests/test_reference.py runs the check: change a docstring, then run this and commit the page with it.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PAGE = ROOT / "docs" / "reference.md"

#: A `#: comment` line (a field's documentation, as Sphinx reads it) and the field it documents.
FIELD_LINE = re.compile(r"^\s+(\w+)\s*[:=]")
COMMENT_LINE = re.compile(r"^\s+#: ?(.*)$")


class _Shown:
    """An annotation written as in the source (annotations are strings here: `from __future__ import annotations`)."""

    def __init__(self, text: Any) -> None:
        self.text = text if isinstance(text, str) else inspect.formatannotation(text)

    def __repr__(self) -> str:
        return self.text


def signature(func: Callable[..., Any], name: str, *, drop_self: bool = True) -> str:
    """`name(params) -> return`, annotations as written, without `self`."""
    sig = inspect.signature(func)
    params = [
        param.replace(annotation=_Shown(param.annotation) if param.annotation is not param.empty else param.empty)
        for param in sig.parameters.values()
        if not (drop_self and param.name in ("self", "cls"))
    ]
    returns = sig.return_annotation
    shown = sig.replace(parameters=params, return_annotation=_Shown(returns) if returns is not sig.empty else sig.empty)
    prefix = "async def " if inspect.iscoroutinefunction(func) else ""
    return f"{prefix}{name}{shown}"


def docstring(obj: Any) -> str:
    return inspect.getdoc(obj) or ""


def field_comments(cls: type) -> dict[str, str]:
    """The `#:` comments above the fields of a class (dataclass fields, enum members, class attributes)."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    found: dict[str, str] = {}
    pending: list[str] = []
    for line in lines:
        comment = COMMENT_LINE.match(line)
        if comment:
            pending.append(comment.group(1))
            continue
        field = FIELD_LINE.match(line)
        if field and pending:
            found.setdefault(field.group(1), " ".join(pending))
        pending = []
    return found


def code(text: str) -> str:
    return f"```python\n{text}\n```\n"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


class Page:
    """The Markdown being written."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.seen: set[str] = set()

    def add(self, *texts: str) -> None:
        for text in texts:
            self.parts.append(text.rstrip("\n") + "\n")

    def heading(self, level: int, text: str) -> None:
        self.add(f"{'#' * level} {text}")

    def member(self, level: int, title: str, func: Callable[..., Any], name: str | None = None) -> None:
        """A function or method: heading, signature, docstring."""
        self.heading(level, f"`{title}`")
        self.add(code(signature(func, name or func.__name__)))
        if docstring(func):
            self.add(docstring(func))

    def methods(self, level: int, cls: type, prefix: str | None = None, skip: tuple[str, ...] = ()) -> None:
        """The public methods and properties a class defines itself, in source order (`skip`: internal ones)."""
        owner = prefix or cls.__name__
        for name, value in vars(cls).items():
            if name.startswith("_") or name in skip or f"{owner}.{name}" in self.seen:
                continue
            self.seen.add(f"{owner}.{name}")
            if isinstance(value, property) and value.fget is not None:
                self.heading(level, f"`{owner}.{name}`")
                self.add(code(f"{name}: {_Shown(inspect.signature(value.fget).return_annotation)!r}"))
                if docstring(value.fget):
                    self.add(docstring(value.fget))
            elif inspect.isfunction(value):
                self.member(level, f"{owner}.{name}", value)

    def fields(self, cls: type) -> None:
        """A table of a dataclass's (or pydantic model's) fields: name, type, default, what it is."""
        comments = field_comments(cls)
        rows = []
        if dataclasses.is_dataclass(cls):
            for item in dataclasses.fields(cls):
                default = _default(item)
                rows.append((item.name, _Shown(item.type).text, default, comments.get(item.name, "")))
        else:
            for name, info in getattr(cls, "model_fields", {}).items():
                value = info.get_default(call_default_factory=True)
                default = "required" if info.is_required() else _plain_default(value)
                meaning = info.description or comments.get(name, "")
                rows.append((name, _Shown(info.annotation).text, default, meaning))
        if any(meaning for *_, meaning in rows):
            head = "| field | type | default | meaning |\n| --- | --- | --- | --- |\n"
            body = "\n".join(f"| `{n}` | `{cell(t)}` | {cell(d)} | {cell(m)} |" for n, t, d, m in rows)
        else:
            head = "| field | type | default |\n| --- | --- | --- |\n"
            body = "\n".join(f"| `{n}` | `{cell(t)}` | {cell(d)} |" for n, t, d, _ in rows)
        self.add(head + body + "\n")


def _default(item: dataclasses.Field[Any]) -> str:
    if item.default is not dataclasses.MISSING:
        return _plain_default(item.default)
    if item.default_factory is not dataclasses.MISSING:
        return _plain_default(item.default_factory())
    return "required"


def _plain_default(value: Any) -> str:
    return f"`{value!r}`"


# -- the page ---------------------------------------------------------------------------------------------------------


def sections() -> Iterator[tuple[str, Callable[[Page], None]]]:
    yield "The public API", public_api
    yield "Hooks", hooks
    yield "Executors", executors
    yield "Sinks and events", sinks
    yield "Results and status values", results
    yield "Clients", clients
    yield "Python functions as tasks", functions
    yield "Plugin settings", plugin_settings
    yield "Errors", errors
    yield "The test kit: gopherq.testing", test_kit


def public_api(page: Page) -> None:
    import gopherq

    page.add(docstring(gopherq))
    page.add("Every name `gopherq` exports, and where it is defined:")
    rows = [f"| `{name}` | `{module}` |" for name, (module, _) in sorted(gopherq._EXPORTS.items())]
    page.add("| name | defined in |\n| --- | --- |\n" + "\n".join(rows) + "\n")


def hooks(page: Page) -> None:
    from gopherq.core import hookspecs

    page.add(docstring(hookspecs))
    for name in sorted(vars(hookspecs), key=_source_line(hookspecs)):
        if name.startswith("gopherq_"):
            page.member(3, name, getattr(hookspecs, name))
    page.heading(3, "The `register` callbacks")
    page.add("What the registration hooks receive as `register` (types for annotations, from `gopherq`):")
    for cls in (hookspecs.RegisterSettings, hookspecs.RegisterExecutor, hookspecs.RegisterSink):
        page.heading(4, f"`{cls.__name__}`")
        page.add(code(signature(cls.__call__, "register")), docstring(cls))
    page.heading(3, "`WorkerView`")
    page.add(docstring(hookspecs.WorkerView))
    page.methods(4, hookspecs.WorkerView)


def executors(page: Page) -> None:
    from gopherq.core import executor
    from gopherq.core.errors import PermanentFailure, RetryTask, TaskFailure
    from gopherq.core.task import CONTROL_FIELDS, Task

    page.add(docstring(executor))
    page.heading(3, "`Executor`")
    page.add(code(signature(executor.Executor.execute, "execute")), docstring(executor.Executor))
    page.heading(3, "The optional extras of an executor")
    page.add("Each is a runtime-checkable protocol (`gopherq.core.executor`): an executor has it by having the member.")
    for extra in executor.EXTRAS:
        page.heading(4, f"`{extra.__name__}`")
        members = [name for name in vars(extra) if not name.startswith("_")]
        for name in members:
            value = vars(extra)[name]
            if callable(value):
                page.add(code(signature(value, name)))
        for name, kind in extra.__annotations__.items():
            page.add(code(f"{name}: {kind}"))
        page.add(docstring(extra))
    page.heading(3, "`ExecutionContext`")
    page.add(docstring(executor.ExecutionContext))
    page.fields(executor.ExecutionContext)
    page.heading(3, "`Task`")
    page.add(docstring(Task))
    page.fields(Task)
    page.add(f"The envelope's control fields (every other field is the executor's): {_names(CONTROL_FIELDS)}.")
    page.heading(3, "What `execute` raises")
    for cls in (RetryTask, PermanentFailure, TaskFailure):
        page.heading(4, f"`{cls.__name__}`")
        page.add(code(signature(cls.__init__, cls.__name__)), docstring(cls))


def sinks(page: Page) -> None:
    from gopherq.core import events

    page.add(docstring(events))
    page.heading(3, "`Sink`")
    page.add(code(signature(events.Sink.handle, "handle")), docstring(events.Sink))
    page.heading(3, "`Event`")
    page.add(docstring(events.Event))
    page.fields(events.Event)
    page.methods(4, events.Event)
    page.heading(3, "`EventFilter`")
    page.add(code(signature(events.EventFilter.__init__, "EventFilter")), docstring(events.EventFilter))
    page.heading(3, "The events")
    page.add("Every event the core and the built-in plugins emit (`gopherq.core.events.EVENTS`):")
    rows = [f"| `{name}` | {cell(when)} |" for name, when in events.EVENTS.items()]
    page.add("| event | when |\n| --- | --- |\n" + "\n".join(rows) + "\n")


def results(page: Page) -> None:
    from gopherq.core.results import ErrorInfo, TaskResult
    from gopherq.core.task import TaskStatus

    page.heading(3, "`TaskStatus`")
    page.add(docstring(TaskStatus))
    comments = field_comments(TaskStatus)
    rows = [f"| `{member.value}` | `TaskStatus.{name}` | {cell(comments.get(name, ''))} |" for name, member in
            TaskStatus.__members__.items() if member.name == name]  # fmt: skip
    page.add("| value | member | meaning |\n| --- | --- | --- |\n" + "\n".join(rows) + "\n")
    page.add(f"`TaskStatus.FAILED` is `{TaskStatus.FAILED.value}`: {comments['FAILED']}")
    page.heading(3, "`TaskResult`")
    page.add(docstring(TaskResult))
    page.fields(TaskResult)
    page.heading(3, "`ErrorInfo`")
    page.add(docstring(ErrorInfo))
    page.fields(ErrorInfo)


def clients(page: Page) -> None:
    from gopherq import client
    from gopherq.core.deadletters import DeadLetters
    from gopherq.core.inspect.inspector import Inspector
    from gopherq.core.inspect.stream import EventReader

    page.add(docstring(client))
    page.heading(3, "`AsyncClient`")
    page.add(code(signature(client.AsyncClient.__init__, "AsyncClient")), docstring(client.AsyncClient))
    page.methods(4, client.AsyncClient)
    page.heading(3, "`Client`")
    page.add(code(signature(client.Client.__init__, "Client")), docstring(client.Client))
    blocking = sorted(name for name, value in vars(client.Client).items() if not name.startswith("_"))
    page.add(f"Its methods, each the blocking form of the `AsyncClient` method of that name: {_names(blocking)}.")
    page.heading(3, "`Enqueued`")
    page.add(docstring(client.Enqueued))
    page.heading(3, "`DeadLetters` (`client.dead_letters`)")
    page.add(docstring(DeadLetters))
    page.methods(4, DeadLetters)
    page.heading(3, "`Inspector` (`client.inspect`)")
    page.add(docstring(Inspector))
    page.methods(4, Inspector, skip=("keys", "summarise"))
    page.methods(4, EventReader, "Inspector", skip=("keys",))


def functions(page: Page) -> None:
    from gopherq import functions as module

    page.add(docstring(module))
    for cls in (module.App, module.TaskFunction, module.Handle):
        page.heading(3, f"`{cls.__name__}`")
        page.add(docstring(cls))
        page.methods(4, cls, skip=("build",))


def plugin_settings(page: Page) -> None:
    from gopherq.core.sections import PluginSettings, SinkSettings

    page.heading(3, "`PluginSettings`")
    page.add(docstring(PluginSettings), "Its subclasses' fields are the keys of the plugin's `[plugins.<name>]` table.")
    page.heading(3, "`SinkSettings`")
    page.add(docstring(SinkSettings))
    page.fields(SinkSettings)
    page.methods(4, SinkSettings)


def errors(page: Page) -> None:
    from gopherq.core import errors as module

    page.add(docstring(module))
    for name, cls in vars(module).items():
        if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == module.__name__:
            parent = cls.__mro__[1].__name__
            page.heading(3, f"`{name}`")
            page.add(f"A `{parent}`. {docstring(cls)}")


def test_kit(page: Page) -> None:
    from gopherq import testing

    page.add(docstring(testing))
    for cls in (testing.PluginHarness, testing.EventRecorder, testing.RedisQueue):
        page.heading(3, f"`{cls.__name__}`")
        page.add(code(signature(cls.__init__, cls.__name__)), docstring(cls))
        page.methods(4, cls, skip=("gopherq_register_sinks", "handle", "cleanup"))
    for cls in (testing.TaskRun, testing.RunningWorker):
        page.heading(3, f"`{cls.__name__}`")
        page.add(docstring(cls))
        page.fields(cls)
    for func in (testing.make_event, testing.build_settings, testing.build_plugins):
        page.member(3, func.__name__, func)
    page.heading(3, "Fixtures")
    page.add("The pytest plugin `gopherq.testing` (entry point `pytest11`) gives every test suite these fixtures:")
    for name in ("gopherq_queue", "gopherq_events", "gopherq_redis_url"):
        fixture = inspect.unwrap(getattr(testing, name))
        wrapped = getattr(fixture, "_get_wrapped_function", None)
        func = wrapped() if wrapped is not None else fixture
        page.heading(4, f"`{name}`")
        page.add(code(signature(func, name)), docstring(func))


def _names(names: Any) -> str:
    return ", ".join(f"`{name}`" for name in sorted(names))


def _source_line(module: Any) -> Callable[[str], int]:
    def line(name: str) -> int:
        try:
            return inspect.getsourcelines(getattr(module, name))[1]
        except (OSError, TypeError):
            return 0

    return line


def render() -> str:
    page = Page()
    page.add(
        "# API reference",
        "<!-- Written by `python docs/gen_reference.py` from the docstrings: do not edit this file, edit them. -->",
        "What applications and plugins use, with signatures, from the docstrings of the source (regenerated with "
        "`python docs/gen_reference.py`; a test fails when this page is out of date). Plugins import only from "
        "`gopherq` and `gopherq.testing`; the modules named below are where those names are defined. The guide "
        "to writing plugins is [plugins.md](plugins.md).",
    )
    built = list(sections())
    page.add("\n".join(f"- [{title}](#{_anchor(title)})" for title, _ in built) + "\n")
    for title, build in built:
        page.heading(2, title)
        build(page)
    text = "\n".join(page.parts)
    text = re.sub(r"\n{3,}", "\n\n", text)
    if re.search(r" at 0x[0-9a-f]+", text):
        raise SystemExit("gen_reference: a default value shows a memory address; the page would change every run")
    return text


def _anchor(title: str) -> str:
    """The heading's anchor as both the repository host and MkDocs make it."""
    text = re.sub(r"[^\w\s-]", "", title.lower()).strip()
    return re.sub(r"[-\s]+", "-", text)


def main(argv: list[str]) -> int:
    text = render()
    if argv == ["--check"]:
        if PAGE.read_text() != text:
            print("docs/reference.md is out of date: run `python docs/gen_reference.py`", file=sys.stderr)
            return 1
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
