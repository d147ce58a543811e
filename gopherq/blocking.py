"""The blocking face of an async helper of the AsyncClient (its dead letters, flows, inspector), for `Client`.

Each attribute read returns a function that connects the async client, calls the helper's method of that name on
the client's private loop thread, and returns its result; so `Client` offers every helper's API without a second,
blocking copy of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gopherq.client import Client


class Blocking:
    """Blocking proxy for an async helper of the AsyncClient (its dead letters, its inspector)."""

    def __init__(self, client: Client, attribute: str) -> None:
        self._client = client
        self._attribute = attribute

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            async def run() -> Any:
                await self._client._async.connect()
                target = getattr(self._client._async, self._attribute)
                return await getattr(target, name)(*args, **kwargs)

            return self._client._run(run())

        return call
