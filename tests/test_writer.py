"""Writer (docs/design.md §11): the compiled Writer against its pure-Python twin.

A hypothesis model runs the same random sequence of writes on both (with and
without an allocator, over chunk sizes that force every field to straddle a
chunk boundary somewhere) and requires the same bytes, lengths, segment
boundaries and errors; a Reader reads every field back; native memory
returns to the allocator on recycle, close and collection.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import membuf
from membuf import Allocator, Reader
from membuf.writer import PyWriter

IMPLS = [PyWriter, membuf._core.Writer]

ops = st.one_of(
    st.tuples(st.just("write_byte"), st.integers(-2, 300)),
    st.tuples(st.just("write_be"), st.integers(0, 9), st.integers(-1, 2**64)),
    st.tuples(st.just("write_le"), st.integers(0, 9), st.integers(-1, 2**64)),
    st.tuples(st.just("write_leb128"), st.integers(-1, 2**64)),
    st.tuples(st.just("write_sleb128"), st.integers(-(2**63) - 1, 2**63)),
    st.tuples(st.just("write"), st.binary(max_size=200)),
    st.tuples(st.just("write_ref"), st.binary(max_size=200)),
    st.tuples(st.just("reserve"), st.integers(0, 40)),
    st.tuples(st.just("take")),
    st.tuples(st.just("bad"), st.sampled_from([1.5, True, "x", None])),
)


def run(w: Any, script: list[tuple[Any, ...]]) -> list[Any]:
    """Apply ``script``; record every result or error, and the bytes of every take."""
    out: list[Any] = []
    for op, *args in script:
        try:
            if op == "bad":
                w.write_be(2, args[0])
            elif op == "reserve":
                slot = w.reserve(args[0])
                slot[:] = bytes(range(len(slot)))
                out.append(("slot", len(slot)))
            elif op == "take":
                m = w.take()
                out.append(("take", m.to_bytes(), [len(s) for s in m]))
                if isinstance(m, membuf.RecyclableMemory):
                    m.recycle()
            else:
                out.append(getattr(w, op)(*args))
        except (TypeError, ValueError) as exc:
            out.append((type(exc).__name__, str(exc)))
        out.append(len(w))
    m = w.take()
    out.append(("end", m.to_bytes()))
    if isinstance(m, membuf.RecyclableMemory):
        m.recycle()
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(ops, max_size=40), st.sampled_from([1, 3, 7, 64, 4096]), st.booleans())
def test_compiled_writer_matches_the_reference(script: list[tuple[Any, ...]], chunk: int,
                                               native: bool) -> None:
    results = []
    for impl in IMPLS:
        a = Allocator() if native else None
        w = impl(a, chunk_size=chunk)
        results.append(run(w, script))
        w.close()
        if a is not None:
            assert a.stats().in_use == 0, impl
    assert results[0] == results[1]


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.tuples(st.integers(1, 8), st.integers(0, 2**64 - 1),
                                 st.integers(-(2**63), 2**63 - 1)), max_size=30),
       chunk=st.sampled_from([1, 5, 4096]))
def test_every_field_reads_back(impl: Any, values: list[tuple[int, int, int]], chunk: int) -> None:
    w = impl(chunk_size=chunk)
    for n, u, s in values:
        v = u & ((1 << (8 * n)) - 1)
        w.write_be(n, v)
        w.write_le(n, v)
        w.write_leb128(u)
        w.write_sleb128(s)
    r = Reader(w.take())
    for n, u, s in values:
        v = u & ((1 << (8 * n)) - 1)
        assert r.read_be(n) == v and r.read_le(n) == v
        assert r.read_leb128() == u and r.read_sleb128() == s
    assert len(r) == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_write_ref_is_by_reference_and_reserve_back_patches(impl: Any) -> None:
    payload = bytearray(b"hello")
    w = impl()
    slot = w.reserve(4)
    w.write_ref(payload)
    slot[:] = (5).to_bytes(4, "big")        # length back-patched after the body
    payload[0:1] = b"j"                      # no copy was made
    m = w.take()
    assert m.to_bytes() == b"\x00\x00\x00\x05jello"
    assert [len(s) for s in m] == [4, 5]     # the run, then the reference


@pytest.mark.parametrize("impl", IMPLS)
def test_small_messages_share_a_chunk(impl: Any) -> None:
    """take() keeps the chunk's tail: 100 messages of 10 bytes, one native chunk."""
    a = Allocator()
    w = impl(a, chunk_size=4096)
    frames = []
    for i in range(100):
        w.write_be(2, 8)
        w.write(i.to_bytes(8, "big"))
        frames.append(w.take())
    assert a.stats().mallocs == 1
    assert [f.to_bytes() for f in frames] == [b"\x00\x08" + i.to_bytes(8, "big") for i in range(100)]
    for f in frames:
        f.recycle()
    assert a.stats().in_use == 4096 - 1000    # the tail the Writer still holds
    w.close()
    assert a.stats().in_use == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_bytes_not_taken_go_back_when_the_writer_dies(impl: Any) -> None:
    a = Allocator()
    w = impl(a, chunk_size=100)
    for i in range(50):
        w.write_be(8, i)
    w.write_ref(b"by reference")
    assert a.stats().in_use >= 400
    del w
    gc.collect()
    assert a.stats().in_use == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_a_reset_allocator_is_not_freed_into(impl: Any) -> None:
    """After reset the allocator has forgotten the Writer's bytes: the Writer keeps them as
    references (still mapped, nobody else's), loses nothing and frees nothing."""
    a = Allocator()
    w = impl(a, chunk_size=64)
    w.write(b"x" * 100)
    a.reset()
    b = a.malloc(64)
    b[:] = b"y" * 64
    w.write(b"z" * 10)                      # into the old chunk's tail: still ours alone
    m = w.take()
    assert m.to_bytes() == b"x" * 100 + b"z" * 10
    assert b.tobytes() == b"y" * 64
    assert isinstance(m, membuf.RecyclableMemory) and m.owned_bytes == 0
    m.recycle()
    w.write(b"after" * 20)                 # past the old tail: a new chunk, owned again
    m = w.take()
    assert m.to_bytes() == b"after" * 20 and m.owned_bytes > 0
    m.recycle()
    w.close()
    assert a.stats().in_use == 64
    a.free(b)
    a.check()
    assert a.stats().in_use == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_arguments_change_nothing(impl: Any) -> None:
    w = impl()
    w.write_byte(1)
    for call, exc in [
        (lambda: w.write_byte(256), ValueError),
        (lambda: w.write_byte(-1), ValueError),
        (lambda: w.write_be(0, 1), ValueError),
        (lambda: w.write_be(9, 1), ValueError),
        (lambda: w.write_le(2, 1 << 16), ValueError),
        (lambda: w.write_be(2.0, 1), TypeError),
        (lambda: w.write_be(2, True), TypeError),
        (lambda: w.write_leb128(-1), ValueError),
        (lambda: w.write_leb128(1 << 64), ValueError),
        (lambda: w.write_sleb128(1 << 63), ValueError),
        (lambda: w.write_sleb128(1.0), TypeError),
        (lambda: w.reserve(-1), ValueError),
        (lambda: w.reserve(1.5), TypeError),
        (lambda: w.write(memoryview(b"abcd")[::2]), BufferError),
        (lambda: w.write(5), TypeError),
        (lambda: w.write_ref(5), TypeError),
    ]:
        with pytest.raises(exc):
            call()
    assert len(w) == 1 and w.take().to_bytes() == b"\x01"
    with pytest.raises(ValueError):
        impl(chunk_size=0)
    with pytest.raises(TypeError):
        impl(allocator=object())
