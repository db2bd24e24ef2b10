"""The compiled Reader and framers against their pure-Python twins (docs/design.md §10).

Both implementations get the same bytes, cut the same way (every split of
``tests/splitting.py``, and random cuts), and the same sequence of calls, bad
arguments included. After every call they must agree exactly: the result, or
the exception's type and message (and ``.needed`` for NeedMore), and the
reader's ``offset``, ``len`` and its Memory's length and segment count. The
compiled side is ``membuf._core.Reader`` and ``membuf.codecs.COMPILED_FRAMERS``,
the reference ``membuf.reader.PyReader`` and ``membuf.codecs.PURE_FRAMERS``,
whichever of the two ``MEMBUF_PURE_PYTHON`` selects for the package.
``MEMBUF_DIFF_SCALE=10`` runs ten times the examples (``make fuzz`` territory).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from splitting import SPLITS, split

from membuf import Allocator, Memory, NeedMore, _core
from membuf.codecs import COMPILED_FRAMERS, PURE_FRAMERS
from membuf.reader import PyReader

SCALE = int(os.environ.get("MEMBUF_DIFF_SCALE", "1"))
IMPLS = {"compiled": (_core.Reader, *COMPILED_FRAMERS), "pure": (PyReader, *PURE_FRAMERS)}


def outcome(call: Callable[[], Any]) -> Any:
    """What a call did, in a form both implementations must produce identically."""
    try:
        return ("ok", normal(call()))
    except Exception as exc:           # every error is part of the contract
        needed = getattr(exc, "needed", None) if isinstance(exc, NeedMore) else None
        return ("raised", type(exc).__name__, str(exc), needed)


def normal(v: Any) -> Any:
    if isinstance(v, Memory):
        return ("Memory", v.tobytes(), v.count, len(v))
    if isinstance(v, memoryview):
        return ("view", v.tobytes())
    if isinstance(v, bytearray):
        return ("bytearray", bytes(v))
    if isinstance(v, list):
        return [normal(x) for x in v]
    if hasattr(v, "__next__"):
        return ("iter", [normal(x) for x in v])
    return v


def state(r: Any) -> tuple[int, int, int, int]:
    m = r.memory
    return (r.offset, len(r), len(m), m.count)


# -- the Reader ----------------------------------------------------------------------------

COUNTS = st.one_of(st.integers(-2, 14), st.sampled_from([2**63, 2**64, 0.5, 2.0, True, None, "3"]))
WIDTHS = st.one_of(st.integers(-1, 10), st.sampled_from([2.0, True, 2**64]))
MAX_BYTES = st.one_of(st.integers(0, 11), st.sampled_from([10.0, True, 10]))
DELIMS = st.sampled_from([b"\r\n", b"a", b"ab", b"\x80", b"", b"\x00\x00\x00", bytearray(b"ab"),
                          5, "ab", None])
SIZES = st.one_of(st.integers(-1, 14), st.sampled_from([1.5, True, 2**70]))

OPS = st.one_of(
    st.tuples(st.sampled_from(["read_byte", "peek_byte", "chunk", "clip_front", "clip_release",
                               "clear_at_end"])),
    st.tuples(st.sampled_from(["read_be", "read_le"]), WIDTHS),
    st.tuples(st.sampled_from(["read_leb128", "read_sleb128"]), st.none() | MAX_BYTES),
    st.tuples(st.sampled_from(["read_bytes", "peek", "take", "range", "skip", "unread"]), COUNTS),
    st.tuples(st.just("find"), DELIMS),
    st.tuples(st.sampled_from(["read_until", "read_line"]), DELIMS, SIZES),
    st.tuples(st.just("read_into"), st.integers(0, 12) | st.just("ro")),
    st.tuples(st.just("push"), st.lists(st.binary(max_size=6), max_size=3)),
    st.tuples(st.just("txn"), st.integers(0, 3), st.booleans()),
)


def apply(r: Any, op: tuple[Any, ...], released: list[bytes]) -> Any:
    name, *args = op
    if name == "txn":                      # (not nested: run_both opens transactions)
        return None
    if name in ("read_leb128", "read_sleb128"):
        return getattr(r, name)() if args[0] is None else getattr(r, name)(max_bytes=args[0])
    if name == "read_line":
        return r.read_line(args[1], args[0])
    if name == "clip_front":
        return r.clip_front()
    if name == "clip_release":
        return r.clip_front(lambda v: released.append(bytes(v)))
    if name == "clear_at_end":
        if not len(r):
            r.memory.clear()
        return None
    if name == "read_into":
        if args[0] == "ro":
            return r.read_into(b"xy")
        buf = bytearray(args[0])
        n = r.read_into(buf)
        return n, bytes(buf[:n])
    if name == "push":
        r.memory.push(*args[0])
        return None
    return getattr(r, name)(*args)


def run_both(segments: list[Any], ops: list[tuple[Any, ...]]) -> None:
    readers = {k: impl[0](Memory(*segments)) for k, impl in IMPLS.items()}
    released: dict[str, list[bytes]] = {k: [] for k in IMPLS}
    i = 0
    while i < len(ops):
        op = ops[i]
        if op[0] == "txn":                 # the next n ops inside a transaction
            n, fail = op[1], op[2]
            inner = ops[i + 1 : i + 1 + n]
            got = {}
            for k, r in readers.items():
                def block(r: Any = r, k: str = k, inner: Any = inner, fail: bool = fail) -> Any:
                    with r.transaction() as same:
                        assert same is r
                        results = [outcome(lambda o=o: apply(r, o, released[k])) for o in inner]
                        if fail:
                            raise KeyError("rewind")
                    return results
                got[k] = (outcome(block), state(r))
            i += 1 + n
        else:
            got = {k: (outcome(lambda r=r, k=k, op=op: apply(r, op, released[k])), state(r))
                   for k, r in readers.items()}
            i += 1
        assert got["compiled"] == got["pure"], (op, got)
        assert released["compiled"] == released["pure"]


def data_pieces() -> st.SearchStrategy[bytes]:
    varint = st.binary(min_size=1, max_size=11).map(lambda b: bytes(x | 0x80 for x in b[:-1]) + b[-1:])
    return st.lists(st.one_of(varint, st.binary(max_size=8),
                              st.sampled_from([b"\r\n", b"ab", b"\x00\x00\x00", b"\xff" * 10])),
                    max_size=8).map(b"".join)


@settings(max_examples=400 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=data_pieces(), how=st.sampled_from(SPLITS), ops=st.lists(OPS, max_size=30))
@example(data=b"\x00\x05hello\xe5\x8e\x26", how="bytewise+empties",
         ops=[("read_be", 2), ("take", 5), ("read_leb128", None), ("read_be", 4)])
@example(data=b"ab\r\ncd", how="halves+empties",
         ops=[("txn", 2, True), ("read_until", b"\r\n", 9), ("read_byte",), ("read_line", b"\r\n", 1)])
def test_reader_every_split(data: bytes, how: str, ops: list[tuple[Any, ...]]) -> None:
    run_both(split(data, how), ops)


@settings(max_examples=300 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=data_pieces(), cuts=st.lists(st.integers(0, 60), max_size=8),
       ops=st.lists(OPS, max_size=30))
def test_reader_random_cuts(data: bytes, cuts: list[int], ops: list[tuple[Any, ...]]) -> None:
    cuts = sorted(c for c in cuts if c <= len(data))
    run_both([data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)], ops)


def test_reader_of_bytes_like_and_bad_arguments() -> None:
    for arg in (b"abc", bytearray(b"abc"), memoryview(b"xabc")[1:], None, 5, "abc", [1, 2]):
        got = {}
        for k, impl in IMPLS.items():
            def make(impl: Any = impl, arg: Any = arg) -> Any:
                r = impl[0](arg)
                return r.read_bytes(len(r)), r.offset
            got[k] = outcome(make)
        assert got["compiled"] == got["pure"], arg


# -- the framers ---------------------------------------------------------------------------


def enc_uleb(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


WIDTH = {"be16": 2, "be24": 3, "be32": 4, "le16": 2, "le32": 4}


@st.composite
def framed(draw: st.DrawFn) -> tuple[dict[str, Any], bytes]:
    """A framer's arguments and a stream for it: good frames, now and then a bad one."""
    kind = draw(st.sampled_from(["leb128", *WIDTH, "delim"]))
    max_frame = draw(st.sampled_from([0, 3, 20, 1000, 2**64 - 1]))
    bodies = draw(st.lists(st.binary(max_size=24), max_size=6))
    if kind == "delim":
        delim = draw(st.sampled_from([b"\r\n", b"|", b"abc"]))
        cfg = {"delim": delim, "max_frame": max_frame}
        stream = b"".join(b.replace(delim[:1], b"") + delim for b in bodies)
    else:
        offset = draw(st.integers(0, 3))
        adjust = draw(st.integers(-3, 3))
        strip = draw(st.none() | st.integers(0, 8))
        cfg = {"prefix": kind, "max_frame": max_frame, "offset": offset, "adjust": adjust,
               "strip": strip}
        out = []
        for body in bodies:
            value = max(len(body) - adjust, 0)
            if kind == "leb128":
                field = enc_uleb(value)
            else:
                value &= (1 << 8 * WIDTH[kind]) - 1
                field = value.to_bytes(WIDTH[kind], "big" if kind[0] == "b" else "little")
            out.append(draw(st.binary(min_size=offset, max_size=offset)) + field + body)
        stream = b"".join(out)
    tail = draw(st.sampled_from([b"", b"\xff" * 11, b"\x00", b"\x80\x80", b"\xff\xff\xff\xff"]))
    return cfg, stream + tail


class ListAllocator:
    """A SupportsMalloc that hands out bytearrays (and counts them)."""

    def __init__(self) -> None:
        self.calls = 0

    def malloc(self, n: int) -> memoryview:
        self.calls += 1
        return memoryview(bytearray(n))


STEPS = st.lists(st.tuples(st.integers(1, 4), st.sampled_from(["split", "views", "views_alloc",
                                                                  "clip"])), min_size=1, max_size=12)


def run_framers(cfg: dict[str, Any], pieces: list[Any], steps: list[tuple[int, str]]) -> None:
    sides = {}
    for k, (reader_type, prefixed, delimited) in IMPLS.items():
        kw = dict(cfg)
        codec = delimited(kw.pop("delim"), kw["max_frame"]) if "delim" in kw else prefixed(**kw)
        sides[k] = (codec, reader_type(Memory()), ListAllocator())
    pos = 0
    for count, what in [*steps, (len(pieces), "views"), (0, "split")]:
        batch, pos = pieces[pos : pos + count], pos + count
        got = {}
        for k, (codec, r, alloc) in sides.items():
            r.memory.push(*batch)
            if what == "clip":
                call: Callable[[], Any] = r.clip_front
            elif what == "split":
                call = lambda codec=codec, r=r: codec.split(r)   # noqa: E731
            else:
                use = alloc if what == "views_alloc" else None
                call = lambda codec=codec, r=r, use=use: codec.split_views(r, use)   # noqa: E731
            got[k] = (outcome(call), state(r), codec.joined, alloc.calls)
        assert got["compiled"] == got["pure"], (what, got)


@settings(max_examples=400 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=framed(), how=st.sampled_from(SPLITS), steps=STEPS)
@example(case=({"prefix": "leb128", "max_frame": 2**64 - 1, "offset": 1, "adjust": 0, "strip": 0},
               b"\x30\x02hi\xc0\x00"), how="bytewise", steps=[(1, "views")])
def test_framers_every_split(case: tuple[dict[str, Any], bytes], how: str,
                             steps: list[tuple[int, str]]) -> None:
    cfg, stream = case
    run_framers(cfg, split(stream, how), steps)


@settings(max_examples=300 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=framed(), cuts=st.lists(st.integers(0, 200), max_size=10), steps=STEPS)
def test_framers_random_cuts(case: tuple[dict[str, Any], bytes], cuts: list[int],
                             steps: list[tuple[int, str]]) -> None:
    cfg, stream = case
    cuts = sorted(c for c in cuts if c <= len(stream))
    run_framers(cfg, [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)],
                steps)


@pytest.mark.parametrize("how", SPLITS)
def test_framers_join_into_an_allocator(how: str) -> None:
    """split_views with a real Allocator: the same frames and joins on both sides."""
    stream = b"".join(len(b).to_bytes(2, "big") + b for b in (b"abc", b"x" * 40, b"", b"yz"))
    with Allocator() as a:
        got = {}
        for k, (reader_type, prefixed, _) in IMPLS.items():
            codec = prefixed("be16", max_frame=100)
            frames = codec.split_views(reader_type(Memory(*split(stream, how))), a)
            got[k] = ([bytes(f) for f in frames], codec.joined, sum(a.owns(f) for f in frames if len(f)))
            for f in frames:
                if len(f) and a.owns(f):
                    a.free(f)
        assert got["compiled"] == got["pure"]
        assert a.stats().in_use == 0


def test_framer_arguments_are_checked_alike() -> None:
    bad: list[dict[str, Any]] = [
        {"prefix": "be64"}, {"prefix": 5}, {"max_frame": -1}, {"max_frame": 2**64},
        {"max_frame": 1.5}, {"max_frame": True}, {"offset": -1}, {"offset": 2**32}, {"offset": 0.5},
        {"adjust": 2**63}, {"adjust": "1"}, {"strip": -1}, {"strip": 1.0}, {"strip": 2**62},
    ]
    for kw in bad:
        got = {k: outcome(lambda impl=impl, kw=kw: impl[1](**kw)) for k, impl in IMPLS.items()}
        assert got["compiled"] == got["pure"] and got["pure"][0] == "raised", kw
    for args in ((b"",), (5,), ("ab",), (b"\n", -1), (b"\n", 2**64)):
        got = {k: outcome(lambda impl=impl, args=args: impl[2](*args)) for k, impl in IMPLS.items()}
        assert got["compiled"] == got["pure"] and got["pure"][0] == "raised", args
    for kw in ({"prefix": "le32", "offset": 2, "adjust": -4, "strip": 1}, {}):
        got = {k: repr(impl[1](**kw)) for k, impl in IMPLS.items()}
        assert got["compiled"] == got["pure"]
