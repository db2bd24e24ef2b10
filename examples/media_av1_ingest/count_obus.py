"""Count AV1 temporal units arriving over TCP, live: read_obu on a StreamReader.

    python examples/media_av1_ingest/count_obus.py --port 9000
    ffmpeg -re -f lavfi -i testsrc2=size=320x240:rate=25 -t 10 \\
           -c:v libaom-av1 -cpu-used 8 -usage realtime -f obu tcp://127.0.0.1:9000

``av1.read_obu`` is a sans-IO parser: it raises NeedMore (consuming nothing)
until a whole OBU is buffered, so wrapping it as a "codec" lets the stream
layer receive and retry. Each OBU's bytes are zero-copy views into the
receive buffer, valid until the next receive; here only their first payload
byte is looked at (to tell shown from hidden frames).
"""

from __future__ import annotations

import argparse
import time

import trio

from membuf.errors import NeedMore
from membuf.media import av1
from membuf.reader import Reader
from membuf.stream import Connection, serve_tcp


class ObuCodec:
    def split(self, r: Reader) -> list[av1.Obu]:
        obus = []
        try:
            while True:
                obus.append(av1.read_obu(r))
        except NeedMore:
            return obus


async def handler(conn: Connection) -> None:
    counts = av1.ObuCounts()
    t0 = last = time.monotonic()
    async for batch in conn.reader.frames(ObuCodec(), batch=True):
        for obu in batch:
            counts.add_obu(obu)
        if time.monotonic() - last >= 1:
            last = time.monotonic()
            print(f"{counts.temporal_units} temporal units, {counts.frames} shown frames,"
                  f" {counts.obus} OBUs, {counts.bytes} bytes")
    print(f"done after {time.monotonic() - t0:.1f} s: {counts.summary()} by type {counts.by_type}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=9000)
    args = p.parse_args()
    print(f"listening on tcp://127.0.0.1:{args.port}")
    trio.run(serve_tcp, handler, args.port)


if __name__ == "__main__":
    main()
