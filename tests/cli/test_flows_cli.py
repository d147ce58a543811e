"""`gopherq flow ID` and `gopherq flows`: a flow's state and each member's, as text and JSON; exit 1 for none."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gopherq import AsyncClient, load_settings
from gopherq.canvas import chain, http_step
from tests.support.common import write_config


def test_flow_and_flows_show_states(
    run_gopherq: Callable[..., Any], tmp_path: Path, redis_url: str, queue_name: str
) -> None:
    config = str(write_config(tmp_path, f"[redis]\nurl = '{redis_url}'\n[queue]\nname = '{queue_name}'\n"))

    async def create() -> None:
        async with AsyncClient(load_settings(config)) as client:
            canvas = chain(http_step("http://127.0.0.1:9/a").named("a"), http_step("http://127.0.0.1:9/b").named("b"))
            await canvas.aapply(client, "cli-flow")

    asyncio.run(create())
    shown = run_gopherq(["flow", "-c", config, "cli-flow"])
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0].startswith("cli-flow: pending - 2 tasks, 2 not final")
    assert "b                        waiting    cli-flow.b after a [fail_fast]" in shown.stdout
    as_json = json.loads(run_gopherq(["flow", "-c", config, "cli-flow", "--json"]).stdout)
    assert {m["node"]: m["state"] for m in as_json["members"]} == {"a": "ready", "b": "waiting"}
    listed = json.loads(run_gopherq(["flows", "-c", config, "--json"]).stdout)
    assert [(f["id"], f["state"]) for f in listed] == [("cli-flow", "pending")]
    missing = run_gopherq(["flow", "-c", config, "nope"])
    assert missing.returncode == 1 and "no flow nope" in missing.stderr
