"""`python -m bench.instructions {redis,worker}`: what a task costs, counted in CPU instructions (callgrind).

On a shared 2-core machine a rate swings 2x with the other jobs, and even CPU time per task moves with cache and
frequency; an instruction count does not: the same code on the same input counts the same, whatever else runs.
valgrind's callgrind counts them (50-100x slower, so the sizes are small): a worker's are those between a dump taken
once it is warm and one after the measured tasks (`callgrind_control -d`, each waited for); redis-server's, which
does nothing between its driver's calls, are zeroed (`-z`) before the measured calls and dumped after them.

- `redis`: a private redis-server under callgrind; `--tasks` no-op envelopes pushed raw, then claimed and settled in
  batches of `--batch` by GoPherQ's own Broker (claim + settle scripts, one process, no executor), with the event log
  off, on without timelines, and on (one `task.succeeded` per task, as a worker's settle sends it): Redis's
  instructions per task. Two flow modes (issue 23), event log off: `fanin`, the `--tasks` children of one fan-in
  (core/flows) claimed and settled as members (each settle moving the flow on); `create`, that fan-in's creation
  (`FlowStore.create`, every call of it), per member. Mode `keyed` (event log off): the tasks are those of `--keys`
  fair keys (the state enqueue.lua leaves: each key's list, its active and backlog entries, `--tasks` / `--keys`
  tasks each, at least `--per-key`), every key active when the count starts: the fair claim's cost per task against
  mode `off`. Mode `push`: only the enqueue of those tasks is counted (enqueue.lua through `Broker.push_special`,
  batches of `--batch`, each key's tasks in turn: task i of every key, then task i + 1), per task.
- `worker`: a real `gopherq run` worker (the benchmark's worker file: pycall no-op tasks, concurrency and batch 500,
  logging at WARNING) under callgrind, against a private redis-server: 1,000 tasks to warm up, then `--tasks` counted:
  the worker's instructions per task, with the stream on (the default) and off; `fanin`, stream on, the tasks are
  members of a fan-in (their envelopes as a flow's creation writes them, with `flow_member`; no flow hash is there,
  so Redis's side of the settle does less than for a real flow, which this mode does not count).

`--before DIR` runs the same measurement with another checkout's code (its `.venv`, and its `bench/` if it has
this module, else this one's), alternating with this checkout's, so one command gives before and after.
Needs valgrind (Debian's package). Figures are for one machine's CPU and Python build; compare them side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
ENVELOPE = b'{"id":"%d","type":"pycall","function":"bench.tasks:anoop","args":[]}'
#: A fan-in child's envelope as a flow's creation encodes it (core/flows/spec.py: `flow_member` before the fields).
MEMBER = (
    b'{"id":"f.c%d","type":"pycall","flow_member":{"flow":"f","node":"c%d"},"function":"bench.tasks:anoop","args":[]}'
)
KEYED = b'{"id":"k%d-%d","type":"pycall","function":"bench.tasks:anoop","args":[],"fair_key":"k%d"}'
RESULT = b'{"status":"succeeded","attempts":1}'


def callgrind(out: Path) -> list[str]:
    """valgrind's callgrind, one dump file per process named by its pid (valgrind runs in the process it starts)."""
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/%p.out"]


def zero(pid: int) -> None:
    """Zero the counts of the process `pid` (only its own: other callgrind runs on the machine are not touched).
    For a process that waits for its caller (redis-server, driven by `drive`); a worker counts between dumps."""
    subprocess.run(["callgrind_control", "-z", str(pid)], capture_output=True, check=False)


def counted(out: Path, pid: int) -> int:
    """The instructions of the process `pid` since `zero`: its first dump (part 1)."""
    return dumped(out, pid, 1)


def dumped(out: Path, pid: int, part: int) -> int:
    """Ask the callgrind of process `pid` for a dump (which also zeroes its counts) and wait for it, whole, as part
    `part` (its `totals:` line, the last one written, is there): its instructions since the previous dump. Counting
    between two dumps, not from a `callgrind_control -z`, keeps a loaded machine from moving where the count
    starts: a zeroing it delayed into the counted work left part of that uncounted (rows of 437,000 and 525,000
    instructions per HTTP task were seen against about 660,000)."""
    subprocess.run(["callgrind_control", "-d", str(pid)], capture_output=True, check=False)
    deadline = time.monotonic() + 120
    time.sleep(1)  # every traced process dumps, the big ones take longer
    while time.monotonic() < deadline:
        found = [_totals(path) for path in glob.glob(f"{out}/{pid}.out.{part}")]
        if found and found[0] is not None:
            return found[0]
        time.sleep(0.5)
    raise TimeoutError(f"callgrind did not write dump {part} of process {pid}")


def _totals(path: str) -> int | None:
    with open(path, errors="replace") as dump:
        for line in dump:
            if line.startswith("totals:"):
                return int(line.split()[1])
    return None


# -- redis: the claim and settle scripts ---------------------------------------------------------------------------


async def drive(url: str, mode: str, tasks: int, batch: int, keys: int = 0, per_key: int = 2) -> None:
    """Push `tasks` envelopes, then (counted) claim and settle them all; `mode`: off, notl or on (the event log),
    fanin (a fan-in's children, event log off), create (only that fan-in's creation is counted) or keyed (off, with
    the tasks spread over `keys` fair keys: see `push_keyed`)."""
    from redis.asyncio import Redis

    from gopherq.core import eventlog
    from gopherq.core.broker import Broker, Settlement
    from gopherq.core.eventlog import EventLog, entry_line

    short_form = hasattr(eventlog, "ShortEvents")  # (a checkout from before it sends whole lines: `--before`)

    redis = Redis.from_url(url, socket_timeout=600)  # a creation call under callgrind takes seconds
    queue = f"ins{uuid.uuid4().hex[:6]}"
    broker = Broker(redis, queue, "instructions:1:0")
    flow = mode in ("fanin", "create")
    if flow:
        from bench.flows import fan_in
        from gopherq.core.flows.store import FlowStore

        laid = fan_in("f", queue, tasks)
        await redis.ping()
        if mode == "create":
            zero(int(os.environ["BENCH_COUNTED_PID"]))
        await FlowStore(redis, queue).create(laid)
        if mode == "create":
            await redis.aclose()
            return
    elif mode == "keyed":
        await push_keyed(redis, broker.keys, tasks, keys, per_key)
    elif mode == "push":
        await redis.ping()
        zero(int(os.environ["BENCH_COUNTED_PID"]))
        await enqueue_keyed(broker, tasks, keys, batch)
        await redis.aclose()
        return
    else:
        for start in range(0, tasks, 1000):
            await redis.rpush(queue, *[ENVELOPE % i for i in range(start, min(tasks, start + 1000))])
    log = None if mode in ("off", "fanin", "keyed") else EventLog(100_000, 0 if mode == "notl" else 20, 86_400)
    await redis.ping()
    zero(int(os.environ["BENCH_COUNTED_PID"]))
    done = 0
    while done < tasks:
        claimed = await broker.claim(batch, 60_000)
        if not claimed:
            break
        stamp = time.time()  # the batch's events, as a worker's settle sends them
        short = eventlog.ShortEvents(stamp, "instructions", queue) if short_form else None
        items = []
        for i, (token, raw) in enumerate(claimed):
            task_id = str(done + i) if mode != "keyed" else raw[7 : raw.index(b'"', 7)].decode()
            dag = None
            if flow:  # the member's id and node, read from its envelope as a worker reads them
                task_id = raw.split(b'"', 4)[3].decode()
                dag = ("f", task_id[2:])
            if log is None:
                items.append(Settlement("ack", token, task_id, result=RESULT, dag=dag))
            elif short is not None:  # in its short form, which the script completes (core/eventlog.py ShortEvents)
                short_event = short.form("task.succeeded", "pycall", 1)[0] + eventlog.duration_json(1e-4)
                items.append(Settlement("ack", token, task_id, result=RESULT, short_event=short_event, dag=dag))
            else:
                events = [entry_line("task.succeeded", stamp, "instructions", queue, task_id, "pycall", 1, 1e-4,
                                     None, None, None)]  # fmt: skip
                items.append(Settlement("ack", token, task_id, result=RESULT, events=events, dag=dag))
        if short is not None and log is not None:
            await broker.settle(items, 60, 1000, log=log, shorts=short.parts())
        else:
            await broker.settle(items, 60, 1000, log=log)
        done += len(claimed)
    await redis.aclose()


async def push_keyed(redis: Any, keys: Any, tasks: int, count: int, per_key: int) -> None:
    """`count` fair keys with `max(per_key, tasks / count)` tasks each in their default-level lists, active and in
    the backlog set, as enqueue.lua leaves them (bench/fairness.py's cost row does the same, timed): the claim
    then takes `tasks` of them, turn by turn."""
    from gopherq.core import fairspec

    listed = getattr(fairspec, "BACKLOG_LISTED", 1)  # (code from before it: every key with waiting tasks)
    per_key = max(per_key, -(-tasks // count))
    for start in range(0, count, 2000):
        batch = range(start, min(count, start + 2000))
        async with redis.pipeline(transaction=False) as pipe:
            for k in batch:
                pipe.rpush(keys.fair_list("d", f"k{k}"), *[KEYED % (k, i, k) for i in range(per_key)])
            pipe.zadd(keys.fair_active("d"), {f"k{k}": 0 for k in batch})
            if per_key >= listed:  # (a key with fewer has no entry)
                pipe.zadd(keys.fair_backlog, {f"k{k}": per_key for k in batch})
            await pipe.execute()
    await redis.hset(keys.fair_count, "d", count * per_key)


async def enqueue_keyed(broker: Any, tasks: int, count: int, batch: int) -> None:
    """`tasks` keyed envelopes over `count` fair keys (task i of every key, then task i + 1), enqueued as a client
    enqueues them: enqueue.lua, `batch` per call."""
    from gopherq.core.broker import SpecialPush

    pushes = [
        SpecialPush(f"k{n % count}-{n // count}", KEYED % (n % count, n // count, n % count)) for n in range(tasks)
    ]
    for start in range(0, tasks, batch):
        await broker.push_special(pushes[start : start + batch])


def redis_row(python: str, code: Path, mode: str, tasks: int, batch: int, keys: int = 0, per_key: int = 2) -> float:
    from bench.services import RedisServer

    with tempfile.TemporaryDirectory(prefix="gopherq-instructions-") as tmp:
        out = Path(tmp) / "cg"
        out.mkdir()
        server = RedisServer(Path(tmp), prefix=callgrind(out)).start()
        try:
            assert server.proc is not None
            env = dict(os.environ, PYTHONPATH=f"{code}:{REPO}", BENCH_COUNTED_PID=str(server.proc.pid))
            args = [python, str(HERE), "drive", server.url, mode, str(tasks), str(batch), str(keys), str(per_key)]
            subprocess.run(args, env=env, check=True)
            return counted(out, server.proc.pid) / tasks
        finally:
            server.stop()


# -- worker: a real gopherq run ------------------------------------------------------------------------------------


def count_worker(
    argv: list[str],
    env: dict[str, str],
    cwd: Path,
    out: Path,
    redis_url: str,
    queue: str,
    envelopes: Callable[[int, int], list[bytes]],
    warm: int,
    tasks: int,
) -> float:
    """Start the worker `argv` (under `callgrind(out)`), push it `warm` tasks, then `tasks` counted ones (`envelopes`
    makes those numbered start to end), each batch waited for: the worker's instructions per counted task."""
    import redis

    from bench.services import stop_process, wait_for

    proc = subprocess.Popen(argv, env=env, cwd=str(cwd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis.from_url(redis_url)
    stats = f"gopherq:{{{queue}}}:stats"
    sent = 0

    def drain(count: int) -> None:
        nonlocal sent
        before = int(client.hget(stats, "acked") or 0)
        for start in range(sent, sent + count, 1000):
            client.rpush(queue, *envelopes(start, min(sent + count, start + 1000)))
        sent += count
        wait_for(lambda: int(client.hget(stats, "acked") or 0) >= before + count, 900, "the tasks to settle")

    try:
        wait_for(lambda: client.zcard(f"gopherq:{{{queue}}}:workers") >= 1, 600, "the worker under valgrind")
        drain(warm)  # imports, caches, pools
        dumped(out, proc.pid, 1)  # (a dump zeroes the counts, and is waited for: see `dumped`)
        drain(tasks)
        return dumped(out, proc.pid, 2) / tasks
    finally:
        stop_process(proc, 60)
        client.close()


def worker_row(python: str, code: Path, mode: str, tasks: int) -> float:
    from bench.services import RedisServer

    with tempfile.TemporaryDirectory(prefix="gopherq-instructions-") as tmp:
        out = Path(tmp) / "cg"
        out.mkdir()
        server = RedisServer(Path(tmp)).start()
        queue = "instructions"
        config = Path(tmp) / "worker.toml"
        lines = ["[redis]", f'url = "{server.url}"', "[queue]", f'name = "{queue}"', "[worker]", "concurrency = 500",
                 "batch_size = 500", "[logging]", 'level = "WARNING"']  # fmt: skip
        if mode == "off":
            lines += ["[plugins.stream]", "enabled = false"]
        template = MEMBER if mode == "fanin" else ENVELOPE
        config.write_text("\n".join(lines) + "\n")
        pycall = code / "examples" / "gopherq-pycall" / "src"
        env = dict(os.environ, PYTHONPATH=f"{code}:{pycall}:{REPO}", BENCH_EXTRA_PATH=str(pycall))
        argv = [*callgrind(out), python, "-m", "bench.gopherq_worker", "-c", str(config)]
        try:
            return count_worker(
                argv,
                env,
                code,
                out,
                server.url,
                queue,
                lambda a, b: [template % ((i, i) if template is MEMBER else i) for i in range(a, b)],
                1000,
                tasks,
            )
        finally:
            server.stop()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "drive":
        url, mode, tasks, batch, keys, per_key = sys.argv[2:8]
        asyncio.run(drive(url, mode, int(tasks), int(batch), int(keys), int(per_key)))
        return
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["redis", "worker"])
    parser.add_argument("--tasks", type=int, default=None, help="counted tasks (redis 5,000; worker 3,000)")
    parser.add_argument("--batch", type=int, default=100, help="claim and settle batch (redis)")
    parser.add_argument(
        "--modes", default=None, help="redis: off,notl,on (and fanin, create, keyed, push); worker: on,off (fanin)"
    )
    parser.add_argument("--keys", type=int, default=10_000, help="redis, mode keyed: active fair keys")
    parser.add_argument("--per-key", type=int, default=2, help="redis, mode keyed: least tasks per key")
    parser.add_argument("--before", type=Path, default=None, help="another checkout (with its own .venv)")
    args = parser.parse_args()
    trees = [("before", args.before.resolve()), ("after", REPO)] if args.before else [("now", REPO)]
    modes = (args.modes or ("off,notl,on" if args.what == "redis" else "on,off")).split(",")
    for mode in modes:
        for label, tree in trees:
            python = str(tree / ".venv" / "bin" / "python")
            if args.what == "redis":
                tasks = args.tasks or 5000
                figure = redis_row(python, tree, mode, tasks, args.batch, args.keys, args.per_key)
                what = "enqueue" if mode == "push" else "claim + settle"
                where = f"redis-server, {what}, batch {args.batch}"
                if mode in ("keyed", "push"):
                    where += f", {args.keys:,} keys"
            else:
                tasks = args.tasks or 3000
                figure = worker_row(python, tree, mode, tasks)
                where = "worker process, no-op tasks"
            print(f"{label:6} {mode:5} {figure:10,.0f} instructions per task ({where}, {tasks:,} tasks)", flush=True)


if __name__ == "__main__":
    main()
