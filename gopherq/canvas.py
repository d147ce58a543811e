"""Building flows in Python: signatures of tasks, `chain`, `group`, `chord` and explicit DAGs (`Flow`).

A signature is a task not yet sent: `add.s(2)` for an `@app.task` function (its parents' results come first in
its arguments when it runs: a chain step gets its parent's return value, a join the list of its parents' values;
`add.si(2)` takes none), `http_step(url, ...)` for an HTTP request (a join with no body of its own POSTs its parents'
outcomes as JSON), `step(type, ...)` for a plugin's task type. `chain(a, b, c)` runs one after another, `group(a,
b)` side by side, `chord(group, join)` runs the join once when the group is done. `.apply()` creates the flow in one
Redis call (more past 5,000 roots) and returns a `FlowHandle` (`.wait()`, `.result()`, `.state()`, `.cancel()`);
`await .aapply(client)` is the same for an AsyncClient. docs/flows.md explains the model, the failure policies and
the guarantees.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from gopherq.core.errors import GoPherQError
from gopherq.core.flows.inputs import parent_values as parent_values  # for the functions plugin
from gopherq.core.flows.spec import Node, Policy
from gopherq.core.flows.store import FlowView

if TYPE_CHECKING:
    from gopherq.client import AsyncClient, Client
    from gopherq.functions import App, TaskFunction


class FlowFailed(GoPherQError):
    """A flow ended without success (failed or cancelled); `view` has each member's state."""

    def __init__(self, view: FlowView) -> None:
        self.view = view
        bad = [m.node for m in view.members if m.state in ("failed", "cancelled", "blocked")]
        super().__init__(f"flow {view.id} {view.state} ({', '.join(sorted(bad)[:5]) or 'no member named'})")


class Signature:
    """One task of a flow, not yet sent: its type, fields and control options, and (optional) its node name and
    failure policy (used when it joins parents)."""

    def __init__(
        self,
        type: str,
        fields: dict[str, Any],
        *,
        app: App | None = None,
        function: TaskFunction[..., Any] | None = None,
    ) -> None:
        self.type, self.fields, self.app, self.function = type, fields, app, function
        self.name: str | None = None
        self.policy: Policy | None = None
        self.open = False  # an open join (Flow.add(..., open=True)): children may be added until it is sealed
        self.args: tuple[Any, ...] = ()
        self.kwargs: dict[str, Any] = {}

    def named(self, name: str) -> Signature:
        """Give this step its node name (default: its position and its function or type)."""
        self.name = name
        return self

    def on_failure(self, policy: str | Policy) -> Signature:
        """The failure policy of this step as a join: fail_fast (default), all_settled, ignore_failures, quorum:N."""
        self.policy = Policy.parse(policy)
        return self

    def set(self, **control: Any) -> Signature:
        """Control options of the task (max_attempts, timeout, priority, backoff...)."""
        self.fields.update(control)
        return self

    def _lay(self, layout: _Layout, after: list[str], policy: Policy | None) -> list[str]:
        return [layout.add(self, after, policy)]

    def task_fields(self) -> tuple[str, dict[str, Any]]:
        """The task type and keyword arguments for `client.task`."""
        if self.function is not None:
            control = {k: v for k, v in self.fields.items() if k != "immutable"}
            fields = self.function.build(self.args, self.kwargs, control)
            if self.fields.get("immutable"):
                fields["immutable"] = True
            return "function", fields
        return self.type, dict(self.fields)

    def apply(self, client: Client | None = None, flow_id: str | None = None) -> FlowHandle:
        return chain(self).apply(client, flow_id)

    async def aapply(self, client: AsyncClient, flow_id: str | None = None) -> AsyncFlowHandle:
        return await chain(self).aapply(client, flow_id)


def signature(
    function: TaskFunction[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], immutable: bool
) -> Signature:
    """The signature of an `@app.task` call (what `fn.s(...)` and `fn.si(...)` return)."""
    sig = Signature("function", {"immutable": True} if immutable else {}, app=function.app, function=function)
    sig.args, sig.kwargs = args, kwargs
    return sig


def step(type: str, **fields: Any) -> Signature:
    """A step of a plugin's task type: `step("email", to=...)`."""
    return Signature(type, fields)


def http_step(url: str, method: str = "POST", **fields: Any) -> Signature:
    """An HTTP step (POST by default: as a join with no `body` it sends its parents' outcomes as JSON)."""
    return Signature("http", {"url": url, "method": method, **fields})


class _Canvas:
    """What chain, group, chord and Flow share: laying out as nodes, and applying."""

    def _lay(self, layout: _Layout, after: list[str], policy: Policy | None) -> list[str]:
        raise NotImplementedError

    def nodes(self, build: Any) -> list[Node]:
        """The flow's nodes, each task built with `build(type, **fields)` (a client's `task`)."""
        layout = _Layout()
        self._lay(layout, [], None)
        return [
            Node(name, _build(build, sig), after, policy or Policy(), sig.open)
            for name, sig, after, policy in layout.nodes
        ]

    def app(self) -> App | None:
        layout = _Layout()
        self._lay(layout, [], None)
        return next((sig.app for _, sig, _, _ in layout.nodes if sig.app is not None), None)

    def apply(self, client: Client | None = None, flow_id: str | None = None) -> FlowHandle:
        """Create the flow (with `client`, or the client of the app of its first function step)."""
        app = self.app()
        if client is None:
            if app is None:
                raise GoPherQError("a flow without function steps needs a client: flow.apply(client)")
            client = app.client
        nodes = self.nodes(client.task)
        made, _created = client.flows.create(nodes, flow_id)
        return FlowHandle(client, made, client._async.queue, app)

    async def aapply(self, client: AsyncClient, flow_id: str | None = None) -> AsyncFlowHandle:
        nodes = self.nodes(client.task)
        made, _created = await client.flows.create(nodes, flow_id)
        return AsyncFlowHandle(client, made, client.queue, self.app())


class chain(_Canvas):
    """Steps that run one after another; each gets its parent's result."""

    def __init__(self, *steps: Signature | _Canvas) -> None:
        self.steps = steps

    def _lay(self, layout: _Layout, after: list[str], policy: Policy | None) -> list[str]:
        for index, item in enumerate(self.steps):
            after = item._lay(layout, after, policy if index == 0 else None)
        return after


class group(_Canvas):
    """Steps that run side by side."""

    def __init__(self, *steps: Signature | _Canvas) -> None:
        self.steps = steps

    def _lay(self, layout: _Layout, after: list[str], policy: Policy | None) -> list[str]:
        exits: list[str] = []
        for item in self.steps:
            exits += item._lay(layout, after, policy)
        return exits


class chord(_Canvas):
    """A group and a join that runs once when the group is done (under `policy`; fail_fast by default)."""

    def __init__(
        self, header: group | list[Signature | _Canvas], body: Signature | _Canvas, policy: str | None = None
    ) -> None:
        self.header = header if isinstance(header, group) else group(*header)
        self.body = body
        self.policy = Policy.parse(policy) if policy is not None else None

    def _lay(self, layout: _Layout, after: list[str], policy: Policy | None) -> list[str]:
        return self.body._lay(layout, self.header._lay(layout, after, policy), self.policy)


class Flow(_Canvas):
    """An explicit DAG: `a = flow.add(sig)`, `flow.add(sig2, depends_on=[a, b], policy="all_settled")`."""

    def __init__(self) -> None:
        self._nodes: list[tuple[Signature, list[str], Policy | None]] = []

    def add(
        self,
        sig: Signature,
        depends_on: list[str] | None = None,
        policy: str | None = None,
        name: str | None = None,
        open: bool = False,
    ) -> str:
        """Add a step; returns its node name (to depend on). `open=True` makes it an open join: children may be
        added while the flow runs (`client.flows.extend`) until it is sealed (`client.flows.seal`)."""
        sig.open = open
        if name is not None:
            sig.name = name
        if sig.name is None:
            sig.name = _default_name(len(self._nodes), sig)
        self._nodes.append((sig, list(depends_on or []), Policy.parse(policy) if policy is not None else None))
        return sig.name

    def _lay(self, layout: _Layout, after: list[str], policy: Policy | None) -> list[str]:
        for sig, depends_on, own in self._nodes:
            layout.add(sig, after + depends_on, own or policy)
        return [sig.name for sig, _, _ in self._nodes if sig.name is not None]


def _build(build: Any, sig: Signature) -> Any:
    task_type, fields = sig.task_fields()
    return build(task_type, **fields)


def _default_name(index: int, sig: Signature) -> str:
    base = sig.function.name.rsplit(":", 1)[-1] if sig.function is not None else sig.type
    return f"{index}-{re.sub(r'[^A-Za-z0-9_:-]', '_', base)[:50]}"


class _Layout:
    """Nodes as they are laid out: name, signature, parents, policy."""

    def __init__(self) -> None:
        self.nodes: list[tuple[str, Signature, list[str], Policy | None]] = []

    def add(self, sig: Signature, after: list[str], policy: Policy | None) -> str:
        name = sig.name or _default_name(len(self.nodes), sig)
        self.nodes.append((name, sig, list(after), sig.policy or policy))
        return name


def _sink_values(view: FlowView, records: list[Any], app: App | None) -> Any:
    """The flow's result: the value of its one sink (a member no other depends on), or the list of its sinks'."""
    values = []
    for record in records:
        value = record.result if record is not None else None
        if app is not None and record is not None and record.type == "function":
            value = app.serializer.loads(value)
        values.append(value)
    return values[0] if len(values) == 1 else values


def _natural(name: str) -> tuple[int, str]:
    """Sort key of a node name: its leading number (the position a builder gave it), then the name."""
    digits = re.match(r"\d+", name)
    return (int(digits.group()) if digits else -1, name)


class AsyncFlowHandle:
    """A flow created from an AsyncClient: its `id`, and ways to follow it."""

    def __init__(self, client: AsyncClient, flow_id: str, queue: str, app: App | None = None) -> None:
        self.client, self.id, self.queue, self.app = client, flow_id, queue, app

    async def state(self) -> FlowView | None:
        return await self.client.flows.get(self.id, self.queue)

    async def wait(self, timeout: float = 30.0) -> FlowView:
        """The flow once final; TimeoutError when it is not within `timeout`."""
        view = await self.client.flows.wait(self.id, timeout, self.queue)
        if view is None or view.state not in ("succeeded", "failed", "cancelled"):
            raise TimeoutError(f"flow {self.id} did not finish within {timeout}s")
        return view

    async def result(self, timeout: float = 30.0) -> Any:
        """The value of the flow's last step (the list of them when it ends in several); FlowFailed otherwise."""
        view = await self.wait(timeout)
        if view.state != "succeeded":
            raise FlowFailed(view)
        sinks = sorted((m for m in view.members if not m.children), key=lambda m: _natural(m.node))
        records = [await self.client.result(m.task_id, self.queue) for m in sinks]
        return _sink_values(view, records, self.app)

    async def cancel(self) -> str | None:
        return await self.client.flows.cancel(self.id, self.queue)


class FlowHandle:
    """The blocking face of AsyncFlowHandle, for a Client."""

    def __init__(self, client: Client, flow_id: str, queue: str, app: App | None = None) -> None:
        self.client, self.id, self.queue, self.app = client, flow_id, queue, app
        self._async = AsyncFlowHandle(client._async, flow_id, queue, app)

    def state(self) -> FlowView | None:
        return self.client._run(self._async.state())

    def wait(self, timeout: float = 30.0) -> FlowView:
        return self.client._run(self._async.wait(timeout))

    def result(self, timeout: float = 30.0) -> Any:
        return self.client._run(self._async.result(timeout))

    def cancel(self) -> str | None:
        return self.client._run(self._async.cancel())
