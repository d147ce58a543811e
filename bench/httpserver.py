"""A minimal keep-alive HTTP/1.1 server on loopback: the HTTP target when nginx is absent (the smoke run).

It answers every request with `200 ok` and logs `<unix time> <uri>` per request, like bench/nginx.conf does.
Run: python -m bench.httpserver --port 8080 --log access.log
"""

from __future__ import annotations

import argparse
import asyncio
import time

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"


class LogBuffer:
    """Buffers log lines and writes them out every 100 ms (as nginx's `buffer=... flush=100ms` does)."""

    def __init__(self, path: str) -> None:
        self.handle = open(path, "a", buffering=1 << 16)
        self.lines: list[str] = []

    def add(self, uri: bytes) -> None:
        self.lines.append(f"{time.time():.3f} {uri.decode('latin-1')}\n")

    async def flush_forever(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            if self.lines:
                lines, self.lines = self.lines, []
                self.handle.write("".join(lines))
                self.handle.flush()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: LogBuffer) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, _, headers = head.partition(b"\r\n")
            parts = request_line.split(b" ")
            length = 0
            for header in headers.split(b"\r\n"):
                name, _, value = header.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or 0)
            if length:
                await reader.readexactly(length)
            log.add(parts[1] if len(parts) > 1 else b"/")
            writer.write(RESPONSE)
            if b"connection: close" in headers.lower():
                await writer.drain()
                break
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def serve(port: int, log_path: str) -> None:
    log = LogBuffer(log_path)
    server = await asyncio.start_server(lambda r, w: handle(r, w, log), "127.0.0.1", port, backlog=4096)
    async with server:
        await asyncio.gather(server.serve_forever(), log.flush_forever())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.log))


if __name__ == "__main__":
    main()
