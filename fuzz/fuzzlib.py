"""Shared pieces of the fuzz harnesses: input decoding, segmentation, mutation, a driver.

Strategy. Every harness exposes ``one_input(data: bytes) -> None``: a pure,
deterministic function of its input that raises only when it found a bug
(an ``AssertionError`` from an oracle, or any exception that is not a
``MembufError``). The same function is driven three ways:

* by atheris (``python fuzz/fuzz_reader.py [libFuzzer flags]``), coverage-guided;
* by :func:`run_random` here, a seeded mutation loop over the harness's seed
  inputs, which needs no atheris and is what ``tests/test_fuzz_smoke.py`` and
  the hypothesis-free fallback of ``make fuzz`` run;
* by hand, to replay a crash file (``python fuzz/fuzz_reader.py crash-...``
  with atheris, or ``one_input(open(path, 'rb').read())``).

Inputs are decoded with :class:`Input`, a forgiving reader (past the end
every number is 0 and every byte string empty), so every byte string is a
valid input and the fuzzer never wastes executions on rejected ones.

:func:`segments` cuts a byte string into the segment shapes that break
parsers: empty segments, one-byte segments, and a mix of bytes / bytearray /
memoryview exporters. The oracle shared by every harness is *split
invariance*: a parser must give the same answer however its input is cut.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from membuf import MembufError

__all__ = [
    "Input",
    "segments",
    "mutate",
    "run_random",
    "main",
    "expect_membuf",
]


class Input:
    """Decode numbers and byte strings from fuzz input; past the end everything is 0 / b""."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def __len__(self) -> int:
        return len(self.data) - self.pos

    def u8(self) -> int:
        if self.pos < len(self.data):
            self.pos += 1
            return self.data[self.pos - 1]
        return 0

    def uint(self, nbytes: int) -> int:
        raw = self.take(nbytes)
        return int.from_bytes(raw, "little")

    def below(self, n: int) -> int:
        """A number in ``0..n-1`` (``n`` up to 2**16)."""
        return self.uint(1 if n <= 256 else 2) % n

    def bool(self) -> bool:
        return bool(self.u8() & 1)

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + max(n, 0)]
        self.pos += len(out)
        return out

    def rest(self) -> bytes:
        return self.take(len(self))


def segments(data: bytes, inp: Input, max_cuts: int = 16) -> list[Any]:
    """Cut ``data`` into segments chosen by ``inp``; joined they give ``data`` back.

    Shapes: whole, every byte apart (with empties between), or up to
    ``max_cuts`` cuts at chosen points (repeated points make empty segments).
    Segment types cycle through bytes, bytearray and memoryview.
    """
    shape = inp.u8() % 8
    if shape == 0 or not data:
        pieces = [data]
    elif shape == 1:
        pieces = [data[i : i + 1] for i in range(len(data))]
        if inp.bool():
            pieces = [p for b in pieces for p in (b"", b)] + [b""]
    else:
        cuts = sorted(inp.below(len(data) + 1) for _ in range(1 + inp.u8() % max_cuts))
        pieces, last = [], 0
        for c in cuts:
            pieces.append(data[last:c])
            last = c
        pieces.append(data[last:])
    kinds = inp.u8()
    out: list[Any] = []
    for i, p in enumerate(pieces):
        k = (kinds + i) % 3
        out.append(p if k == 0 else bytearray(p) if k == 1 else memoryview(bytearray(p)))
    return out


def expect_membuf(fn: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """Run ``fn``; return ``(result, None)`` or ``(None, exc)`` for a MembufError.

    Any other exception propagates: that is the bug the fuzzer is looking for.
    """
    try:
        return fn(), None
    except MembufError as exc:
        return None, exc


# -- mutation driver (no atheris needed) --------------------------------------


def mutate(rng: random.Random, data: bytes, max_len: int = 4096) -> bytes:
    """One to four libFuzzer-style mutations: flip, set, insert, erase, splice, dup."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        if op == 0 and buf:                                  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:                                # set an interesting byte
            buf[rng.randrange(len(buf))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, 0x3F, 0xC0))
        elif op == 2:                                        # insert random bytes
            i = rng.randrange(len(buf) + 1)
            buf[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and buf:                                # erase a run
            i = rng.randrange(len(buf))
            del buf[i : i + rng.randint(1, 16)]
        elif op == 4 and buf:                                # truncate
            del buf[rng.randrange(len(buf)) :]
        elif op == 5 and buf:                                # duplicate a run
            i = rng.randrange(len(buf))
            j = min(len(buf), i + rng.randint(1, 32))
            buf[j:j] = buf[i:j]
        elif op == 6 and len(buf) >= 4:                      # overwrite a 1/2/4-byte int
            w = rng.choice((1, 2, 4))
            i = rng.randrange(max(1, len(buf) - w))
            buf[i : i + w] = rng.choice((0, 1, 2**31, 2**32 - 1, rng.randrange(2**32))).to_bytes(
                4, "big")[-w:]
        else:                                                # fresh random tail
            buf += rng.randbytes(rng.randint(1, 32))
    return bytes(buf[:max_len])


def run_random(
    one_input: Callable[[bytes], None],
    seeds: Sequence[bytes],
    *,
    runs: int | None = None,
    seconds: float | None = None,
    seed: int = 0,
    max_len: int = 4096,
) -> int:
    """Call ``one_input`` on seeds, random bytes and mutations of both; return the count.

    Stops after ``runs`` inputs or ``seconds`` of wall time, whichever comes
    first (at least one must be given). Deterministic for a given ``seed``
    and ``runs``. A failing input is reported with its bytes, then re-raised.
    """
    if runs is None and seconds is None:
        raise ValueError("give runs, seconds or both")
    rng = random.Random(seed)
    pool: list[bytes] = list(seeds) or [b""]
    deadline = None if seconds is None else time.monotonic() + seconds
    n = 0
    while (runs is None or n < runs) and (deadline is None or time.monotonic() < deadline):
        if n < len(seeds):
            data = seeds[n]
        elif rng.random() < 0.1:
            data = rng.randbytes(rng.randint(0, 256))
        else:
            data = mutate(rng, rng.choice(pool), max_len)
            if rng.random() < 0.05 and len(pool) < 512:
                pool.append(data)                # let mutations compound a little
        try:
            one_input(data)
        except BaseException:
            print(f"\nfailing input ({len(data)} bytes): {data!r}", file=sys.stderr)
            raise
        n += 1
    return n


def main(one_input: Callable[[bytes], None], seeds: Callable[[], Iterable[bytes]]) -> None:
    """Command line of a harness: atheris when installed, else the random driver.

    ``python fuzz/fuzz_X.py [libFuzzer args]`` runs atheris with the given
    libFuzzer flags (``-max_total_time=60``, a corpus directory, a crash file
    to replay). ``python fuzz/fuzz_X.py --random SECONDS`` runs the seeded
    mutation driver instead; ``--seeds DIR`` writes the seed inputs into a
    corpus directory for atheris.
    """
    argv = sys.argv
    if len(argv) >= 3 and argv[1] == "--seeds":
        n = write_seeds(argv[2], seeds())
        print(f"{argv[0]}: wrote {n} seed inputs to {argv[2]}")
        return
    if len(argv) >= 3 and argv[1] == "--random":
        n = run_random(one_input, list(seeds()), seconds=float(argv[2]))
        print(f"{argv[0]}: {n} random/mutated inputs, no failure")
        return
    import atheris  # type: ignore[import-not-found]

    atheris.instrument_all()         # membuf is already imported: instrument its bytecode
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


def write_seeds(directory: str, seeds: Iterable[bytes]) -> int:
    """Write seed inputs as files into ``directory`` (an atheris corpus); return how many."""
    import hashlib
    import os

    os.makedirs(directory, exist_ok=True)
    count = 0
    for s in seeds:
        name = hashlib.sha1(s).hexdigest()
        with open(os.path.join(directory, name), "wb") as f:
            f.write(s)
        count += 1
    return count

