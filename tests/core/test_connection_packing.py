"""GoPherQ's connections pack commands with hiredis in one C call (core/connection.py): the bytes on the wire must be
exactly what redis-py's own packer makes, for every type GoPherQ and its plugins send, and what hiredis cannot pack
must still be packed, or refused with redis-py's own error."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from gopherq.core.connection import RedisConnection
from gopherq.core.settings import Settings

SAMPLES: list[tuple[Any, ...]] = [
    ("EVALSHA", "a" * 40, 2, b"gopherq:{q}:ready", "k\u00e9y \u2603", b"\x00\xff\r\n", -5, 2**70, ""),
    ("ZADD", "k", 1.5, "m", 1e-05, "n", 1e20, "o", 0.1, "p", 1796565136980.123, "q", float("inf"), "r"),
    ("SET", "k", memoryview(b"view"), "EX", 60),
    ("CLIENT SETNAME", "name"),
    (b"PING",),
]


async def test_gopherq_connections_pack_exactly_as_redis_py_does(redis_url: str) -> None:
    connection = RedisConnection(Settings(redis={"url": redis_url}), "packing")
    client = await connection.open()
    try:
        connection_class = client.connection_pool.connection_class
        assert connection_class.pack_command is not Connection.pack_command  # hiredis is installed: the C path
        ours, theirs = connection_class(), Connection()
        for args in SAMPLES:
            assert b"".join(ours.pack_command(*args)) == b"".join(theirs.pack_command(*args)), args
        for bad in (None, True, object()):
            with pytest.raises(DataError):
                ours.pack_command("SET", "k", bad)
        # And through a real round trip: a script call and a pipeline.
        assert await client.eval("return {ARGV[1], ARGV[2], ARGV[3]}", 0, "k\u00e9y", 1.5, b"\xff") == [
            "k\u00e9y".encode(),
            b"1.5",
            b"\xff",
        ]
        async with client.pipeline(transaction=False) as pipe:
            pipe.set("gopherq-packing-test", "v\u00e9", ex=60)
            pipe.get("gopherq-packing-test")
            assert (await pipe.execute())[1] == "v\u00e9".encode()
        await client.delete("gopherq-packing-test")
    finally:
        await connection.close()


def test_a_plain_redis_client_is_left_alone() -> None:
    assert aioredis.Redis().connection_pool.connection_class is Connection
