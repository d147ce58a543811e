"""A dead task as an operator may copy or edit it: the envelope to edit (masked, without what GoPherQ keeps), the
edited envelope with its masked values put back, and the task as a command line rendered by its executor's plugin.

The core knows no command line: an executor may offer `render_command(envelope) -> str | None` (the http plugin
renders a curl command). It is handed the envelope as shown (masked), so a secret the page does not show is not in
the command either. An edit is made on the masked envelope too: every value the operator left as it was shown (a
masked header, a URL with a masked password) is put back from the stored task when it is requeued, so masking never
turns a secret into `********` on the wire, and a value the operator changed is taken as typed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gopherq.core import codec
from gopherq.core.bounds import SHOWN_FIELD
from gopherq.core.errors import NotFound
from gopherq.core.masking import Masker
from gopherq.core.outcomes import raw_from_entry
from gopherq.core.task import RESERVED_FIELDS

if TYPE_CHECKING:
    from gopherq.core.inspect.inspector import Inspector
    from gopherq.core.plugins import PluginManager

#: Fields left out of an envelope offered for editing: GoPherQ's own, and the id (the edit is a new task).
_NOT_EDITED = frozenset({*RESERVED_FIELDS, "id"})


async def stored_task(inspector: Inspector, queue: str, entry_id: str) -> dict[str, Any]:
    """The dead task as stored (unmasked; never shown), NotFound when there is no such dead letter or its bytes
    are not a task (not a JSON object, or only a prefix of a too-large task was kept), or are over SHOWN_FIELD
    (what any face shows of one stored field: a command or an edit form of it would be as large)."""
    entry = await inspector.dead_letters(queue).get(entry_id)
    if entry is None:
        raise NotFound(f"no dead letter {entry_id!r} in queue {queue!r}")
    if entry.get("raw_truncated"):
        raise NotFound(f"dead letter {entry_id!r} keeps only a prefix of its task: there is nothing to edit")
    raw = raw_from_entry(entry)
    if len(raw) > SHOWN_FIELD:  # every face bounds what it shows (core/bounds.py): the raw download has it all
        raise NotFound(f"dead letter {entry_id!r} is {len(raw)} bytes, too large to show as a command or an edit")
    try:
        task = codec.loads(raw)
    except codec.JSONDecodeError:
        task = None
    if not isinstance(task, dict):
        raise NotFound(f"dead letter {entry_id!r} is not a JSON task: there is nothing to edit")
    return task


def editable_view(task: dict[str, Any], masker: Masker) -> dict[str, Any]:
    """The envelope to offer for editing: masked, without the fields GoPherQ keeps and without the id."""
    shown = masker.value(task)
    return {key: value for key, value in shown.items() if key not in _NOT_EDITED}


async def editable(inspector: Inspector, queue: str, entry_id: str) -> dict[str, Any]:
    return editable_view(await stored_task(inspector, queue, entry_id), inspector.masker)


def restore_masked(edited: Any, original: Any, shown: Any) -> Any:
    """`edited` with every value that equals its shown (masked) form put back to the `original` one."""
    if isinstance(edited, dict) and isinstance(original, dict) and isinstance(shown, dict):
        return {
            key: restore_masked(value, original[key], shown.get(key)) if key in original else value
            for key, value in edited.items()
        }
    if isinstance(edited, list) and isinstance(original, list) and isinstance(shown, list):
        if len(edited) == len(original) == len(shown):
            return [restore_masked(*values) for values in zip(edited, original, shown, strict=True)]
        return edited
    return original if edited == shown and edited != original else edited


def edited_envelope(task: dict[str, Any], edited: dict[str, Any], masker: Masker) -> dict[str, Any]:
    """The envelope to enqueue from an operator's edit of `editable_view(task)`: an id the operator added is kept
    (else the new task gets a fresh one)."""
    restored = restore_masked(edited, task, masker.value(task))
    return {key: value for key, value in restored.items() if key not in RESERVED_FIELDS}


async def render_command(inspector: Inspector, plugins: PluginManager, queue: str, entry_id: str) -> str | None:
    """The dead task as a command line, by its executor's `render_command` (masked); None when it offers none."""
    task = await stored_task(inspector, queue, entry_id)
    kind = task.get("type") or ("http" if "url" in task else None)
    entry = plugins.executors.get(str(kind)) if kind else None
    render = getattr(entry, "render_command", None) if entry is not None else None
    if render is None:
        return None
    rendered = render(inspector.masker.value(task))
    return rendered if isinstance(rendered, str) else None
