"""What one worker holds: every task it claimed and has not settled yet (by attempt token), and the runners executing
them. The one piece of state the worker's parts share, as a public object each of them is handed.

The fetcher adds what it claims, the settler removes what Redis accepted, the heartbeat renews the leases of all of
it, the cancel watch reads it to find a runner to cancel. See the glossary in docs/plugins.md (held, token, lease).
"""

from __future__ import annotations

import asyncio
import bisect
from collections import deque
from typing import Any

from gopherq.core.task import Task

#: How `held` marks a held task that waits staged (claimed ahead, not started).
STAGED = "staged"


class Holdings:
    """The tasks a worker holds and the asyncio tasks running them."""

    def __init__(self) -> None:
        #: token -> task, for every claimed, unsettled task (None while its bytes are not yet decoded, or never
        #: decode). Its keys are the leases the heartbeat renews.
        self.tasks: dict[str, Task | None] = {}
        #: The asyncio task running each attempt (named after its token).
        self.runners: set[asyncio.Task[None]] = set()
        #: Claimed and admitted tasks waiting for a free slot (the fetcher's prefetch), oldest first: (token, task,
        #: executor). They are held like running ones (in `tasks`, their leases renewed) but have no runner yet.
        self.staged: deque[tuple[str, Task, Any]] = deque()
        #: Runners cancelled on a client's request (see Upkeep's cancel watch), told apart from a shutdown.
        self.cancelling: set[asyncio.Task[None]] = set()
        #: (first token, claim time) of every batch claimed since the oldest held one: when each task was claimed,
        #: without a write per task (see `running`).
        self.batches: list[tuple[int, float]] = []
        #: Set when a runner finishes: the fetcher waits on it for a free slot.
        self.slot_free = asyncio.Event()
        #: True while the fetcher waits on `slot_free`: the runners that just ended free their slots within a loop
        #: turn or two, and its claim goes out then. The settler lets that claim go to Redis before the settle of
        #: those runners' outcomes (`Settler.flush`): Redis runs one script at a time, and a claim sent just after
        #: a settle waits for the settle script to end before its own starts; sent first, it is answered after its
        #: own script alone, and the settle runs in Redis while the worker runs the new batch. (In a no-op drain
        #: of batches of 500, the worker had waited about a third of each batch's cycle for its claim.)
        self.waiting_for_slot = False
        #: Claims the fetcher has sent: the settler waits for the next one, not for the fetcher to wait again.
        self.claims = 0
        #: When the longest-running task held was claimed, as of the last heartbeat (None: none held); the
        #: metrics sink reads it from its own thread, so it is written, never computed, there.
        self.oldest_claimed: float | None = None

    def finished(self, runner: asyncio.Task[None]) -> None:
        """A runner's done callback: its slot is free."""
        self.runners.discard(runner)
        self.slot_free.set()

    def held(self) -> tuple[list[list[Any]], list[list[Any]]]:
        """The tasks this worker holds, as [token, task id, claimed at], oldest first: those running, and those
        claimed ahead that have not started (staged: held, not running), each with a fourth item, STAGED, for the
        readers of the worker's heartbeat. The claim time comes from `batches` (a batch's tokens are consecutive,
        see claim.lua), which is trimmed here to what is still held."""
        batches = self.batches
        if not self.tasks:
            batches.clear()
            return [], []
        tokens = sorted((int(token), task) for token, task in self.tasks.items())
        firsts = [first for first, _ in batches]
        oldest = bisect.bisect_right(firsts, tokens[0][0]) - 1
        if oldest > 0:
            del batches[:oldest]
            del firsts[:oldest]
        staged_tokens = {entry[0] for entry in self.staged}
        running: list[list[Any]] = []
        staged: list[list[Any]] = []
        for token, task in tokens:
            at = bisect.bisect_right(firsts, token) - 1
            since = batches[at][1] if at >= 0 else None
            entry = [str(token), task.id if task is not None else None, since]
            if staged_tokens and entry[0] in staged_tokens:
                entry.append(STAGED)
                staged.append(entry)
            else:
                running.append(entry)
        return running, staged
