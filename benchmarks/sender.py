"""The sending half of the stream benchmarks: a separate process that writes a
seeded stream of LEB128-framed messages to a TCP port as fast as it can.

Run by ``bench_stream.py`` (one sender process per contender and round), or by
hand::

    python benchmarks/sender.py --port 5000 --workload small --bytes 64000000 --seed 1

The stream is one seeded *block* of frames repeated until at least ``--bytes``
have been sent, so the sender spends its time in ``sendall`` and not in Python.
``make_block`` and ``expected`` are imported by the receiver to know the
checksum every contender must return, without trusting any contender.

Checksum of a stream: ``(frames, payload bytes, sum of the first payload byte
of every frame)``; the first-byte sum is what proves a parser found the real
frame boundaries (payload bytes are seeded random, so a shifted boundary
changes it).
"""

from __future__ import annotations

import argparse
import random
import socket
import sys

WORKLOADS: dict[str, tuple[int, int]] = {
    "big": (64 << 10, 64 << 10),  # (a) 64 KiB frames
    "small": (16, 300),  # (b) 16..300 B frames
}
BLOCK_BYTES = 4 << 20


def leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def make_block(workload: str, seed: int) -> tuple[bytes, tuple[int, int, int]]:
    """One block of whole frames (about 4 MiB) and its checksum."""
    lo, hi = WORKLOADS[workload]
    rng = random.Random(seed)
    parts: list[bytes] = []
    size = frames = payload = first = 0
    while size < BLOCK_BYTES:
        n = rng.randint(lo, hi)
        body = rng.randbytes(n)
        head = leb128(n)
        parts += (head, body)
        size += len(head) + n
        frames += 1
        payload += n
        first += body[0]
    return b"".join(parts), (frames, payload, first)


def repeats_for(block: bytes, total: int) -> int:
    return max(1, -(-total // len(block)))


def expected(workload: str, seed: int, total: int) -> tuple[int, tuple[int, int, int]]:
    """(stream length in bytes, checksum) of what ``main`` sends for these options."""
    block, (f, p, s) = make_block(workload, seed)
    r = repeats_for(block, total)
    return len(block) * r, (f * r, p * r, s * r)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="small")
    ap.add_argument("--bytes", type=int, default=64_000_000, help="send at least this much")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    block, _ = make_block(args.workload, args.seed)  # before connecting: not timed
    view = memoryview(block)
    with socket.create_connection((args.host, args.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(repeats_for(block, args.bytes)):
            sock.sendall(view)
        sock.shutdown(socket.SHUT_WR)
        # wait for the receiver to close, so the data is never cut short by a reset
        while sock.recv(4096):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
