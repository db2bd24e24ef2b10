"""Reader micro-benchmarks: fixed-width and LEB128 reads against the usual alternatives.

    .venv/bin/python benchmarks/bench_reader.py [--rounds 9] [--quick]

Each case reads N values in a loop with the read bound to a local, the way a
parser's inner loop would; the figure is the median over interleaved rounds,
in ns per read (loop overhead included on both sides of every ratio).

* ``read_be(4)`` against a precompiled ``struct.Struct('>I').unpack_from`` on
  bytes (goal: within 3x);
* ``read_leb128()`` of a 3-byte value against the plain-Python varint loop a
  user would write and against the PyPI ``leb128`` package (goal: faster than
  both). ``leb128.u.decode_reader`` reads a file-like object (the streaming
  equivalent); ``leb128.u.decode`` needs the varint's bytes already cut out,
  which the caller would first have to find, so it is shown for reference.
"""

from __future__ import annotations

import argparse
import io
import struct
from collections.abc import Callable

import _common

from membuf import Reader

VARINT = bytes.fromhex("e58e26")          # 624485


def interleaved(cases: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median CPU seconds per case over ``rounds`` rotating rounds (the suite's harness)."""
    return {name: fig.median for name, fig in _common.interleaved(cases, rounds, warmup=0).items()}


def fixed_cases(n: int) -> dict[str, Callable[[], object]]:
    blob = bytes(range(256)) * (4 * n // 256 + 1)
    unpack = struct.Struct(">I").unpack_from
    segments = [blob[i : i + 4096] for i in range(0, len(blob), 4096)]

    def struct_loop() -> object:
        off = 0
        for _ in range(n):
            unpack(blob, off)[0]
            off += 4
        return off

    def reader_loop(segs: list[bytes]) -> Callable[[], object]:
        def run() -> object:
            read_be = Reader.from_bytes(*segs).read_be
            for _ in range(n):
                read_be(4)
            return n

        return run

    def empty_loop() -> object:
        for _ in range(n):
            pass
        return n

    return {
        "struct.Struct('>I').unpack_from": struct_loop,
        "Reader.read_be(4), one segment": reader_loop([blob]),
        "Reader.read_be(4), 4 KiB segments": reader_loop(segments),
        "(empty loop)": empty_loop,
    }


def leb_cases(n: int) -> dict[str, Callable[[], object]]:
    blob = VARINT * n

    def plain_varint(buf: bytes, pos: int) -> tuple[int, int]:
        result = shift = 0
        while True:
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result, pos
            shift += 7

    def plain_loop() -> object:
        pos = 0
        for _ in range(n):
            _, pos = plain_varint(blob, pos)
        return pos

    def reader_loop() -> object:
        read = Reader.from_bytes(blob).read_leb128
        for _ in range(n):
            read()
        return n

    cases: dict[str, Callable[[], object]] = {
        "Reader.read_leb128()": reader_loop,
        "plain-Python varint loop": plain_loop,
    }
    try:
        import leb128
    except ImportError:
        print("(PyPI leb128 not installed: .venv/bin/pip install leb128)")
        return cases

    def pkg_reader() -> object:
        decode_reader = leb128.u.decode_reader
        bio = io.BytesIO(blob)
        for _ in range(n):
            decode_reader(bio)
        return n

    def pkg_decode() -> object:
        decode = leb128.u.decode
        mv = memoryview(blob)
        pos = 0
        for _ in range(n):
            decode(mv[pos : pos + 3])
            pos += 3
        return n

    cases["leb128.u.decode_reader(BytesIO)"] = pkg_reader
    cases["leb128.u.decode(pre-cut slice)"] = pkg_decode
    return cases


def report(title: str, medians: dict[str, float], n: int, base: str) -> None:
    print(title)
    ref = medians[base]
    for name, sec in medians.items():
        print(f"  {name:<36}{sec / n * 1e9:>8.1f} ns/read {sec / ref:>7.2f}x of {base}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.n = 3, 20_000
    n = args.n
    assert Reader.from_bytes(VARINT).read_leb128() == 624485
    report(f"fixed-width reads, {n} per round, median of {args.rounds} interleaved rounds",
           interleaved(fixed_cases(n), args.rounds), n, "struct.Struct('>I').unpack_from")
    report(f"LEB128 reads of a 3-byte value, {n} per round, median of {args.rounds} rounds",
           interleaved(leb_cases(n), args.rounds), n, "plain-Python varint loop")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
