"""Fuzz harness: every Reader operation, checked against a bytes model.

Strategy. The input picks a payload, cuts it into segments (``fuzzlib.segments``),
pushes some of them into a Memory up front and keeps the rest to push later,
then runs a script of Reader operations decoded from the rest of the input:
every read, peek, take, range, skip, unread, find, read_until, clip_front,
late pushes, and transactions of several reads. The model is the joined
bytes plus a cursor, so every operation has an exact expected outcome:

* a value (compared byte for byte; Memory results also through ``==``),
* or ``NeedMore`` with the exact ``needed`` count for fixed-size reads,
* or ``MalformedError``;

and after a failed read the Reader's ``len`` and ``offset`` must be what they
were (atomicity). After every operation ``len(reader)``, ``reader.offset``,
``len(memory)`` and ``memory.to_bytes()`` are compared with the model, and
inside a transaction an error (``NeedMore`` or ``MalformedError``) must
rewind exactly to where it began.

Run: ``python fuzz/fuzz_reader.py -max_total_time=60`` (atheris) or
``python fuzz/fuzz_reader.py --random 60`` (seeded mutation, no atheris).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fuzzlib import Input, main, segments  # noqa: E402

from membuf import MalformedError, MembufError, Memory, NeedMore, Reader  # noqa: E402

Expect = tuple[Any, int] | type[MembufError]   # (value, bytes consumed) or the error class


class Model:
    """What the Reader should hold: all bytes ever pushed, the cursor, the clip point."""

    def __init__(self) -> None:
        self.data = b""
        self.pos = 0          # absolute bytes consumed
        self.dropped = 0      # absolute bytes clipped off the Memory's front

    @property
    def rem(self) -> bytes:
        return self.data[self.pos :]


def leb128(rem: bytes, signed: bool) -> Expect:
    """The documented LEB128 contract: at most 10 bytes, within 64 bits."""
    v = shift = 0
    for i, b in enumerate(rem[:10]):
        v |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            if i == 9 and (b not in (0, 0x7F) if signed else b > 1):
                return MalformedError
            if signed and b & 0x40:
                v -= 1 << shift
            return v, i + 1
    return MalformedError if len(rem) >= 10 else NeedMore


def sized(n: int, rem: bytes, value: Callable[[], Any], consume: bool = True) -> Expect:
    if n < 0:
        return MalformedError
    if n > len(rem):
        return NeedMore
    return value(), n if consume else 0


def signed_size(inp: Input) -> int:
    """A read size: mostly small, sometimes negative, sometimes large."""
    k = inp.u8()
    if k < 200:
        return k % 48
    if k < 220:
        return -(k % 5) - 1
    return inp.uint(2)


def pattern(inp: Input, rem: bytes) -> bytes:
    """A search pattern of 0-3 bytes: from the input, or cut from what is buffered."""
    n = inp.u8() % 4
    if inp.bool() and rem:
        at = inp.below(len(rem))
        return rem[at : at + n]
    return inp.take(n)


def joined(x: Any) -> bytes:
    if isinstance(x, Memory):
        return x.to_bytes()
    return b"".join(bytes(v) for v in x)


# op name -> (how to decode args, model outcome, real call, how to normalise the real result)
def plan(op: int, inp: Input, m: Model) -> tuple[str, Expect, Callable[[Reader], Any], int | None]:
    """Decode one operation; return its name, the model's outcome, the real call and,
    for fixed-size reads, the exact ``needed`` a NeedMore must carry."""
    rem = m.rem
    if op == 0:
        return "read_byte", (sized(1, rem, lambda: rem[0])), lambda r: r.read_byte(), 1 - len(rem)
    if op == 1:
        return "peek_byte", sized(1, rem, lambda: rem[0], False), lambda r: r.peek_byte(), 1 - len(rem)
    if op in (2, 3):
        n = inp.u8() % 10
        big = op == 2
        exp: Expect
        if not 1 <= n <= 8:
            exp = MalformedError
        else:
            exp = sized(n, rem, lambda: int.from_bytes(rem[:n], "big" if big else "little"))
        call = (lambda r: r.read_be(n)) if op == 2 else (lambda r: r.read_le(n))
        return f"read_{'b' if big else 'l'}e({n})", exp, call, n - len(rem)
    if op == 4:
        return "read_leb128", leb128(rem, False), lambda r: r.read_leb128(), None
    if op == 5:
        return "read_sleb128", leb128(rem, True), lambda r: r.read_sleb128(), None
    if op in (6, 7, 9, 10, 11):
        n = signed_size(inp)
        name = {6: "read_bytes", 7: "peek", 9: "take", 10: "range", 11: "skip"}[op]
        value = (lambda: None) if op == 11 else (lambda: rem[:n])
        exp = sized(n, rem, value, op != 7)
        calls: dict[int, Callable[[Reader], Any]] = {
            6: lambda r: r.read_bytes(n), 7: lambda r: r.peek(n), 9: lambda r: r.take(n),
            10: lambda r: r.range(n), 11: lambda r: r.skip(n),
        }
        return f"{name}({n})", exp, calls[op], n - len(rem)
    if op == 8:
        k = inp.u8() % 40
        got = min(k, len(rem))
        buf = bytearray(k)

        def read_into(r: Reader) -> bytes:
            assert r.read_into(buf) == got
            return bytes(buf[:got])

        return f"read_into({k})", (rem[:got], got), read_into, None
    if op == 12:
        n = signed_size(inp) if inp.bool() else inp.u8() % 8
        back = m.pos - m.dropped
        exp = MalformedError if not 0 <= n <= back else (None, -n)
        return f"unread({n})", exp, lambda r: r.unread(n), None
    if op == 13:
        sub = pattern(inp, rem)
        return f"find({sub!r})", (rem.find(sub), 0), lambda r: r.find(sub), None
    if op == 14:
        delim = pattern(inp, rem)
        max_size = signed_size(inp)
        if not delim or max_size < 0:
            exp = MalformedError
        else:
            window = max_size + len(delim)
            j = rem[:window].find(delim)
            if j < 0:
                exp = MalformedError if len(rem) >= window else NeedMore
            else:
                exp = (rem[:j], j + len(delim))
        return (f"read_until({delim!r}, {max_size})", exp,
                lambda r: r.read_until(delim, max_size), None)
    raise AssertionError(op)


def check_state(r: Reader, mem: Memory, m: Model, what: str) -> None:
    assert len(r) == len(m.data) - m.pos, (what, len(r), len(m.data) - m.pos)
    assert r.offset == m.pos, (what, r.offset, m.pos)
    assert len(mem) == len(m.data) - m.dropped, (what, len(mem), len(m.data) - m.dropped)


def apply(r: Reader, mem: Memory, m: Model, op: int, inp: Input) -> None:
    """Run one read on the Reader and the model; raise the MembufError it raised, if any."""
    name, exp, call, needed = plan(op, inp, m)
    before = (len(r), r.offset, len(mem))
    try:
        got = call(r)
    except MembufError as exc:
        assert isinstance(exp, type), f"{name}: raised {exc!r}, model says {exp!r}"
        assert isinstance(exc, exp), f"{name}: raised {exc!r}, model says {exp.__name__}"
        assert (len(r), r.offset, len(mem)) == before, f"{name}: failed read moved the Reader"
        assert str(exc), f"{name}: {type(exc).__name__} without a message"
        if isinstance(exc, NeedMore):
            assert exc.needed >= 1, (name, exc.needed)
            if needed is not None:
                assert exc.needed == needed, (name, exc.needed, needed)
        raise
    assert not isinstance(exp, type), f"{name}: returned {got!r}, model says {exp.__name__}"
    value, consumed = exp
    if isinstance(got, Memory):
        assert got == value, (name, got.to_bytes(), value)
        got = got.to_bytes()
    elif isinstance(got, Iterator):
        got = joined(got)
    assert got == value, (name, got, value)
    m.pos += consumed
    check_state(r, mem, m, name)


N_READS = 15


def one_input(data: bytes) -> None:
    """Decode a payload, its segmentation and an operation script; run and check it."""
    inp = Input(data)
    payload = inp.take(inp.uint(2) % 2048)
    segs = segments(payload, inp)
    first = max(0, len(segs) - inp.u8() % 4)      # most segments up front, a few later
    mem = Memory(*segs[:first])
    pending = segs[first:]
    m = Model()
    m.data = b"".join(bytes(s) for s in segs[:first])
    r = mem.reader()
    for _ in range(200):
        if not len(inp):
            break
        op = inp.u8() % (N_READS + 4)
        if op < N_READS:
            try:
                apply(r, mem, m, op, inp)
            except MembufError:
                pass
        elif op == N_READS:                       # push the next pending segment
            if pending:
                seg = pending.pop(0)
                mem.push(seg)
                m.data += bytes(seg)
        elif op == N_READS + 1:                   # clip the consumed prefix
            released: list[bytes] = []
            release = released.append if inp.bool() else None
            pieces = r.clip_front(release)  # type: ignore[arg-type]
            assert joined(pieces) == m.data[m.dropped : m.pos], "clip_front pieces"
            if release is not None:
                assert joined(released) == joined(pieces), "clip_front release order"
            m.dropped = m.pos
        elif op == N_READS + 2:                   # a transaction of up to three reads
            start = m.pos
            try:
                with r.transaction():
                    for _ in range(1 + inp.u8() % 3):
                        apply(r, mem, m, inp.u8() % N_READS, inp)
            except MembufError:
                m.pos = start                     # any error inside rewinds the transaction
        else:                                     # a fresh Reader sees the whole Memory
            fresh = mem.reader()
            assert fresh.read_bytes(len(fresh)) == m.data[m.dropped :], "fresh reader"
        check_state(r, mem, m, f"op {op}")
        assert mem.to_bytes() == m.data[m.dropped :], "memory content"


def seeds() -> list[bytes]:
    """A few structured inputs: payloads with varints, delimiters and every op."""
    out = []
    payload = bytes([0x96, 0x01, 0xFF, 0xFF, 0x03, 0x2A]) + b"GET / HTTP\r\n\r\nbody" + bytes(range(40))
    for shape in range(8):
        script = bytes(op for op in range(N_READS + 4) for op in (op, 3, 2, 1))
        out.append(len(payload).to_bytes(2, "little") + payload + bytes([shape, 5, 3, 1, 2]) + script)
    out.append(b"\x0b\x00" + b"\xff" * 10 + b"\x01" + bytes([0, 0, 4, 5, 4]))   # over 64 bits
    return out


if __name__ == "__main__":
    main(one_input, seeds)
