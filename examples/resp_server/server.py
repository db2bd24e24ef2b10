"""A Redis-protocol (RESP) server for PING, SET and GET, in two forms.

``membuf``: the parser is a codec (``split(reader)``) written with the documented
Reader calls (``transaction``, ``peek_byte``, ``read_line``, ``read_bytes``,
``skip``); the stream layer receives into native memory and
hands it every complete command at once (``frames(codec, batch=True)``).

``baseline``: what one writes by hand: trio ``receive_some`` into a bytearray,
``bytes.find`` for each CRLF, ``int()`` of the slices.

Both answer every command of a receive with one send. Run one with
``python server.py membuf --port 6390`` and point ``redis-benchmark -p 6390`` at it;
``bench.py`` runs both side by side under redis-benchmark.
"""

from __future__ import annotations

import argparse
from typing import Any

import trio

import membuf
from membuf import MalformedError, NeedMore, Reader

STORE: dict[bytes, bytes] = {}
CRLF = b"\r\n"


def execute(args: list[bytes]) -> bytes:
    """The reply to one command."""
    name = args[0].upper() if args else b""
    if name == b"SET" and len(args) == 3:
        STORE[args[1]] = args[2]
        return b"+OK\r\n"
    if name == b"GET" and len(args) == 2:
        value = STORE.get(args[1])
        return b"$-1\r\n" if value is None else b"$%d\r\n%s\r\n" % (len(value), value)
    if name == b"PING":
        return b"+PONG\r\n"
    return b"-ERR unknown command\r\n"


class Resp:
    """RESP arrays of bulk strings, split from a Reader: every complete command."""

    def split(self, r: Reader) -> list[list[bytes]]:
        out = []
        append = out.append
        read_line, read_bytes, skip = r.read_line, r.read_bytes, r.skip
        while len(r):
            try:
                with r.transaction():            # a partial command rewinds: retried later
                    if r.peek_byte() != 0x2A:    # '*'
                        raise MalformedError(f"RESP: expected '*', got {bytes([r.peek_byte()])!r}")
                    count = int(read_line(21)[1:])
                    args = []
                    for _ in range(count):
                        line = read_line(21)
                        if line[:1] != b"$":
                            raise MalformedError("RESP: expected a bulk string")
                        args.append(read_bytes(int(line[1:])))
                        skip(2)
                    append(args)
            except NeedMore:
                break
        return out

    def split_views(self, r: Reader, allocator: Any = None) -> list[Any]:
        raise NotImplementedError("RESP commands are lists of arguments, not views")


async def membuf_handler(conn: membuf.Connection) -> None:
    codec = Resp()
    async for batch in conn.reader.frames(codec, batch=True):
        await conn.send(b"".join([execute(cmd) for cmd in batch]))
        del batch


async def baseline_handler(stream: trio.SocketStream) -> None:
    buf = bytearray()
    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            buf += data
            pos, replies, end = 0, [], len(buf)
            while pos < end:
                if buf[pos] != 0x2A:
                    return
                e = buf.find(CRLF, pos)
                if e < 0:
                    break
                count, p, args = int(buf[pos + 1 : e]), e + 2, []
                for _ in range(count):
                    e = buf.find(CRLF, p)
                    if e < 0:
                        break
                    size = int(buf[p + 1 : e])
                    p = e + 2
                    if p + size + 2 > end:
                        break
                    args.append(bytes(buf[p : p + size]))
                    p += size + 2
                else:
                    replies.append(execute(args))
                    pos = p
                    continue
                break
            del buf[:pos]
            if replies:
                await stream.send_all(b"".join(replies))
    except trio.BrokenResourceError:
        return


async def main(impl: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        if impl == "membuf":
            await nursery.start(membuf.serve_tcp, membuf_handler, port, "127.0.0.1")
        else:
            await nursery.start(trio.serve_tcp, baseline_handler, port)
        print(f"{impl} RESP server on 127.0.0.1:{port}", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("impl", choices=["membuf", "baseline"])
    ap.add_argument("--port", type=int, default=6390)
    ns = ap.parse_args()
    try:
        trio.run(main, ns.impl, ns.port)
    except KeyboardInterrupt:
        pass
