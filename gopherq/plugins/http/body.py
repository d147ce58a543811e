"""Reading a response body with bounded memory and work, whatever the endpoint sends.

Both transports hand the executor the body exactly as it came off the wire (neither decodes it), and this module
is the one place that decodes it, with bounded output at every step:

- at most `limit + 1` decoded bytes are ever produced (one past the limit says that the body was longer): zlib
  is asked for no more than that (`decompress(data, max_length)`, the rest of the input waiting in its
  `unconsumed_tail`), so a body that inflates a thousandfold costs what its first `limit` bytes cost;
- at most `wire_limit(limit)` bytes are read off the wire, and no step of a nested encoding produces more than
  that, so compressed input that decodes to little or nothing (empty deflate blocks, endless gzip headers)
  cannot keep a task reading;
- gzip (or x-gzip) and deflate (zlib-wrapped or raw) are decoded, in any order and repeated up to
  MAX_CODINGS times, the codings the executor asks for (ACCEPT_ENCODING). A body in any other coding, or in more
  codings than that, is kept as it was received (its Content-Encoding header is in the result).

Reading stops at either bound; the result then says `body_truncated`, and the connection is closed instead of
being pooled (the transports pool only connections whose response was read to its end).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

import httpx

#: The Accept-Encoding both transports send unless a task sets its own: the codings `BodyDecoder` decodes.
ACCEPT_ENCODING = "gzip, deflate"
#: Most codings decoded in one body ("gzip, gzip" is two); a body with more is kept as it was received.
MAX_CODINGS = 3
#: Largest piece of input a decoding step takes, and of output it hands the next step, at a time.
_STEP_INPUT = _STEP_OUTPUT = 16 * 1024


def wire_limit(limit: int) -> int:
    """Most bytes read off the wire (and produced by any step of a nested encoding) for a body kept up to `limit`
    bytes: room for any compressed form of such a body, and for a little more than the limit when there is no
    compression at all."""
    return 2 * limit + 64 * 1024


#: zlib's window bits for a gzip stream.
_GZIP_WBITS = zlib.MAX_WBITS | 16


def _zlib_header(head: bytes) -> bool:
    """Whether a deflate body starts with a zlib header (RFC 1950): most do; some servers send raw deflate."""
    return head[0] & 0x0F == 8 and head[0] >> 4 <= 7 and (head[0] << 8 | head[1]) % 31 == 0


class _Inflate:
    """One zlib decoding step (gzip, or deflate zlib-wrapped or raw), fed compressed bytes and giving at most as
    many bytes as it is asked for; input it could not use yet waits in zlib's unconsumed tail."""

    def __init__(self, coding: str) -> None:
        self.name = "deflate" if coding == "deflate" else "gzip"
        #: deflate: the first bytes, until there are two to say whether a zlib header is there.
        self.head = b""
        self.decoder: zlib._Decompress | None = None if coding == "deflate" else zlib.decompressobj(_GZIP_WBITS)
        #: The stream has ended: whatever follows is dropped unread.
        self.ended = False

    @property
    def pending(self) -> bool:
        """Whether input fed earlier is still waiting to be decoded."""
        return self.decoder is not None and bool(self.decoder.unconsumed_tail)

    def decode(self, data: bytes | memoryview, room: int) -> bytes:
        """At most `room` bytes decoded from `data` and what earlier calls left unconsumed."""
        if self.ended:
            return b""
        decoder = self.decoder
        if decoder is None:
            self.head += data
            if len(self.head) < 2:
                return b""
            data, self.head = self.head, b""
            decoder = self.decoder = zlib.decompressobj(zlib.MAX_WBITS if _zlib_header(data) else -zlib.MAX_WBITS)
        if decoder.unconsumed_tail:
            data = decoder.unconsumed_tail + data
        try:
            out = decoder.decompress(data, room)
        except zlib.error as exc:
            raise httpx.DecodingError(f"the response body is not valid {self.name}: {exc}") from None
        # What follows the end of the stream (a second gzip member, padding) is not decoded, as httpx did not.
        self.ended = decoder.eof
        return out


class BodyDecoder:
    """Decodes one body chunk by chunk and keeps its first `limit` bytes; `full` once there is nothing more to
    keep or read (the body was longer than the limit, or reading it would pass `wire_limit`)."""

    def __init__(self, content_encoding: str | None, limit: int) -> None:
        self.limit = limit
        self.wire_limit = wire_limit(limit)
        self.steps: list[_Inflate] = []
        self.produced: list[int] = []
        codings = [c for c in (content_encoding or "").lower().replace(" ", "").split(",") if c and c != "identity"]
        if 0 < len(codings) <= MAX_CODINGS and all(c in ("gzip", "x-gzip", "deflate") for c in codings):
            # Codings are listed in the order they were applied: the last one is undone first.
            self.steps = [_Inflate(coding) for coding in reversed(codings)]
            self.produced = [0] * len(self.steps)
        self.chunks: list[bytes] = []
        self.kept = 0
        self.read = 0
        self.full = False

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes off the wire; sets `full` when reading should stop."""
        room = self.wire_limit - self.read
        over = len(chunk) > room
        if over:
            chunk = chunk[:room]
        self.read += len(chunk)
        if not self.steps:
            self._keep(chunk)
        else:  # in small slices, so what zlib keeps unconsumed (it copies it) stays small too
            view = memoryview(chunk)
            for start in range(0, len(view), _STEP_INPUT):
                self._push(0, view[start : start + _STEP_INPUT])
                if self.full:
                    break
        if over:
            self.full = True

    def body(self) -> bytes:
        """The decoded body, at most `limit` bytes."""
        return b"".join(self.chunks)

    def _keep(self, data: bytes | memoryview) -> None:
        room = self.limit - self.kept
        if len(data) > room:  # more than the limit: the body is truncated
            data = data[:room]
            self.full = True
        self.chunks.append(bytes(data))
        self.kept += len(data)

    def _push(self, index: int, data: bytes | memoryview) -> None:
        """Decode `data` through step `index` and the steps after it, stopping as soon as the body is full."""
        if index == len(self.steps):
            self._keep(data)
            return
        step = self.steps[index]
        last = index == len(self.steps) - 1
        while not self.full:
            room = self.limit + 1 - self.kept if last else _STEP_OUTPUT
            out = step.decode(data, room)
            data = b""
            if not last:
                self.produced[index] += len(out)
                if self.produced[index] > self.wire_limit:
                    self.full = True
                    return
            if out:
                self._push(index + 1, out)
            if len(out) < room and not step.pending:
                return  # this step needs more input


def read_whole(content: bytes, content_encoding: str | None, limit: int) -> tuple[bytes, bool]:
    """(the first `limit` decoded bytes of a body already read whole, whether there was more)."""
    if content_encoding is None:
        return (content[:limit], True) if len(content) > limit else (content, False)
    decoder = BodyDecoder(content_encoding, limit)
    decoder.feed(content)
    return decoder.body(), decoder.full


async def read_chunks(chunks: AsyncIterator[bytes], content_encoding: str | None, limit: int) -> tuple[bytes, bool]:
    """(the first `limit` decoded bytes of a body read chunk by chunk, whether there was more); stops reading as
    soon as the decoder is full. The caller closes the connection unless the body was read to its end."""
    decoder = BodyDecoder(content_encoding, limit)
    async for chunk in chunks:
        decoder.feed(chunk)
        if decoder.full:
            break
    return decoder.body(), decoder.full


async def read_body(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """`read_whole` or `read_chunks` for an httpx response (the httpx transport's). The caller closes the
    response: a body not read to its end closes its connection."""
    encoding = response.headers.get("content-encoding")
    try:
        content = response.content  # already read
    except httpx.ResponseNotRead:
        return await read_chunks(response.aiter_raw(), encoding, limit)
    return read_whole(content, encoding, limit)
