"""Record RTMP publishes to FLV files: the sans-IO RTMP session on membuf's stream layer.

    python examples/media_rtmp_record/record.py --port 1935 --out /tmp
    ffmpeg -re -i input.flv -c copy -f flv rtmp://127.0.0.1:1935/live/test  # -> /tmp/live-test.flv

Each audio/video message arrives as one RecyclableMemory (the RTMP body *is*
an FLV tag body); it is written out behind an 11-byte tag header with one
gather write (no joining copy) and recycled at once.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import trio

from membuf.errors import NeedMore
from membuf.media import rtmp
from membuf.memory import Memory
from membuf.reader import Reader
from membuf.stream import Connection, serve_tcp

FLV_HEADER = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"


class SessionCodec:
    """Hands ServerSession to StreamReader.frames(): split() returns every event buffered."""

    def __init__(self, session: rtmp.ServerSession) -> None:
        self.session = session

    def split(self, r: Reader) -> list[Any]:
        events: list[Any] = []
        try:
            while True:
                events.append(self.session.next_event(r))
        except NeedMore:
            pass
        return events or ([None] if self.session.has_data_to_send() else [])  # None: "just send replies"


def tag(msg: rtmp.Message) -> Memory:
    body = msg.body
    n, ts = len(body), msg.timestamp
    head = (bytes([msg.type]) + n.to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big")
            + bytes([ts >> 24 & 0xFF]) + b"\0\0\0")
    out = Memory(head)
    out.extend(body)                              # by reference: no copy
    out.push((n + 11).to_bytes(4, "big"))         # PreviousTagSize
    return out


def make_handler(out_dir: str):  # type: ignore[no-untyped-def]
    async def handler(conn: Connection) -> None:
        session = rtmp.ServerSession(conn.allocator)
        fd = -1
        try:
            async for batch in conn.reader.frames(SessionCodec(session), batch=True):
                for ev in batch:
                    if isinstance(ev, rtmp.Publish):
                        path = os.path.join(out_dir, f"{ev.app}-{ev.name}.flv".replace("/", "_"))
                        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                        os.write(fd, FLV_HEADER)
                        print(f"recording {ev.app}/{ev.name} to {path}")
                    elif isinstance(ev, rtmp.Media):
                        if fd >= 0:
                            tag(ev.message).write_to(fd)   # one writev
                        ev.message.body.recycle()
                    elif isinstance(ev, rtmp.Unpublish):
                        print(f"{ev.app}/{ev.name} done")
                replies = session.data_to_send()
                if replies:
                    await conn.send(Memory(*replies))
        finally:
            session.close()
            if fd >= 0:
                os.close(fd)
    return handler


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=1935)
    p.add_argument("--out", default=".")
    args = p.parse_args()
    print(f"listening on rtmp://127.0.0.1:{args.port}/<app>/<name>")
    trio.run(serve_tcp, make_handler(args.out), args.port)


if __name__ == "__main__":
    main()
