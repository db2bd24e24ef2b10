"""Every public entry checks its arguments first, and a refused call changes nothing.

docs/design.md (Rules, Errors): "Check once at the public entry, then do the
work: a failed call changes nothing". Sizes are ``int``s: a ``float`` or a
``bool`` is ``TypeError``, and the message names what was given; a size no
allocator or frame can hold (``2**64``) is ``MemoryLimitError`` or
``ValueError`` at construction, never ``OverflowError`` and never accepted
at construction only to fail later; a delimiter is bytes, not an int.

Each case gives the call, the exceptions the contract allows, and a snapshot
of the state it must leave unchanged (allocator stats, a view's bytes, a
Reader's offset and content, a StreamReader's buffered bytes, a ring).

Cases that fail because of code other engineers are rewriting right now are
marked ``xfail(strict=True)`` with the owner: when the fix lands the case
passes, strict turns that into a failure, and the marker must go.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest
import trio

import membuf
from membuf import Allocator, Memory, MemoryLimitError, Reader, RecyclableMemory
from membuf.codecs import Delimited, LengthPrefixed
from membuf.media import av1, flv, rtmp
from membuf.media.limits import Limits
from membuf.media.ring import FrameRing
from membuf.media.servers import RtmpServer

LEAD = "allocator (membuf/allocator.py): the lead"
READER = "Reader, codecs, Memory (membuf/reader.py, codecs.py, memory.py): the Reader engineer"
STREAM = "stream layer (membuf/stream.py, membuf/_stream/): the stream engineer"


def owned(owner: str, why: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=f"{owner}: {why}")


def refused(call: Callable[[], Any], allowed: tuple[type[BaseException], ...],
            named: str | None, state: Callable[[], Any]) -> None:
    """``call()`` raises one of ``allowed`` (never OverflowError), whose message contains
    ``named`` (the type that was passed), and ``state()`` is the same before and after."""
    before = state()
    with pytest.raises(BaseException) as info:
        call()
    exc = info.value
    assert not isinstance(exc, OverflowError), f"OverflowError: {exc}"
    assert isinstance(exc, allowed), f"{type(exc).__name__}: {exc} (wanted {allowed})"
    if named is not None:
        assert named in str(exc), f"the message does not say what was passed: {exc}"
    assert state() == before


TYPE = (TypeError,)
TOO_BIG = (MemoryLimitError, ValueError)


# -- Allocator ---------------------------------------------------------------------


def alloc_state(a: Allocator, mv: memoryview) -> Any:
    s = a.stats()
    return (s.reserved, s.in_use, s.mallocs, s.frees, bytes(mv), a.owns(mv))


@pytest.mark.parametrize(("call", "allowed", "named"), [
    pytest.param(lambda a, mv: a.malloc(True), TYPE, "bool", id="malloc(True)"),
    pytest.param(lambda a, mv: a.malloc(1.0), TYPE, "float", id="malloc(1.0)"),
    pytest.param(lambda a, mv: a.malloc("8"), TYPE, "str", id="malloc('8')"),
    pytest.param(lambda a, mv: a.borrow(1.5), TYPE, "float", id="borrow(1.5)"),
    pytest.param(lambda a, mv: a.borrow(2**64), TOO_BIG, None, id="borrow(2**64)"),
    pytest.param(lambda a, mv: a.free_rest(mv, 1.5), TYPE, "float", id="free_rest(mv, 1.5)"),
    pytest.param(lambda a, mv: a.free_rest(mv, True), TYPE, "bool", id="free_rest(mv, True)"),
    pytest.param(lambda a, mv: a.free_rest(mv, 65), (ValueError,), None, id="free_rest(mv, 65)"),
    pytest.param(lambda a, mv: a.free(5), (TypeError, ValueError), "int", id="free(5)"),
])
def test_allocator_entries(call: Any, allowed: Any, named: Any) -> None:
    a = Allocator()
    mv = a.malloc(64)
    mv[:] = bytes(range(64))
    refused(lambda: call(a, mv), allowed, named, lambda: alloc_state(a, mv))
    a.free(mv)
    assert a.stats().in_use == 0


@pytest.mark.parametrize(("kw", "allowed", "named"), [
    pytest.param({"max_bytes": 1.5}, TYPE, "float", id="max_bytes=1.5"),
    pytest.param({"max_bytes": -1}, (ValueError,), None, id="max_bytes=-1"),
    pytest.param({"max_bytes": 2**64}, TOO_BIG, None, id="max_bytes=2**64"),
    pytest.param({"max_bytes": True}, TYPE, "bool", id="max_bytes=True"),
    pytest.param({"arena_size": 1.5}, TYPE, "float", id="arena_size=1.5"),
    pytest.param({"arena_size": 2**64}, TOO_BIG, None, id="arena_size=2**64"),
    pytest.param({"strategy": 5}, (TypeError, ValueError), None, id="strategy=5"),
])
def test_allocator_construction(kw: dict[str, Any], allowed: Any, named: Any) -> None:
    refused(lambda: Allocator(**kw), allowed, named, lambda: None)


# -- Memory and RecyclableMemory -----------------------------------------------------


def memory_state(m: Memory) -> Any:
    return (len(m), m.count, m.to_bytes())


@pytest.mark.parametrize(("call", "allowed", "named"), [
    pytest.param(lambda m: Memory(5), TYPE, "int", id="Memory(5)"),
    pytest.param(lambda m: m.push(5), TYPE, "int", id="push(5)"),
    pytest.param(lambda m: m.push(b"xy", 5), TYPE, "int", id="push(b'xy', 5)"),
    pytest.param(lambda m: m.copy_to(5), TYPE, "int", id="copy_to(5)"),
    pytest.param(lambda m: m.copy_to(bytearray(1)), (ValueError,), None, id="copy_to(short)"),
])
def test_memory_entries(call: Any, allowed: Any, named: Any) -> None:
    m = Memory(b"abc")
    refused(lambda: call(m), allowed, named, lambda: memory_state(m))


@pytest.mark.parametrize(("call", "allowed", "named"), [
    pytest.param(lambda a, rm: rm.next_n(1.5), TYPE, "float", id="next_n(1.5)"),
    pytest.param(lambda a, rm: rm.next_n(True), TYPE, "bool", id="next_n(True)"),
    pytest.param(lambda a, rm: rm.push_owned(5), (TypeError, ValueError), "int",
                 id="push_owned(5)"),
    pytest.param(lambda a, rm: RecyclableMemory(object()), TYPE, "object",
                 id="RecyclableMemory(object())"),
])
def test_recyclable_memory_entries(call: Any, allowed: Any, named: Any) -> None:
    a = Allocator()
    rm = RecyclableMemory(a)
    rm.next_n(8)[:] = b"12345678"
    refused(lambda: call(a, rm), allowed, named,
            lambda: (rm.owned_bytes, rm.to_bytes(), a.stats().in_use))
    rm.recycle()
    assert a.stats().in_use == 0


# -- Reader --------------------------------------------------------------------------


def reader_state(r: Reader) -> Any:
    return (r.offset, len(r), r.peek(len(r)))


@pytest.mark.parametrize(("call", "allowed", "named"), [
    pytest.param(lambda r: r.skip(0.5), TYPE, "float", id="skip(0.5)"),
    pytest.param(lambda r: r.skip(True), TYPE, "bool", id="skip(True)"),
    pytest.param(lambda r: r.read_be(2.0), TYPE, "float", id="read_be(2.0)"),
    pytest.param(lambda r: r.read_le(2.0), TYPE, "float", id="read_le(2.0)"),
    pytest.param(lambda r: r.read_bytes(1.5), TYPE, "float", id="read_bytes(1.5)"),
    pytest.param(lambda r: r.read_bytes(True), TYPE, "bool", id="read_bytes(True)"),
    pytest.param(lambda r: r.take(1.5), TYPE, "float", id="take(1.5)"),
    pytest.param(lambda r: r.peek(True), TYPE, "bool", id="peek(True)"),
    pytest.param(lambda r: r.unread(0.5), TYPE, "float", id="unread(0.5)"),
    pytest.param(lambda r: list(r.range(1.5)), TYPE, "float", id="range(1.5)"),
    pytest.param(lambda r: r.read_until(5, 10), TYPE, "int", id="read_until(5, 10)"),
    pytest.param(lambda r: r.read_until(b"x", 1.5), TYPE, "float", id="read_until(b'x', 1.5)"),
    pytest.param(lambda r: r.find(3), TYPE, "int", id="find(3)"),
    pytest.param(lambda r: r.find("l"), TYPE, "str", id="find('l')"),
    pytest.param(lambda r: r.read_into(5), TYPE, "int", id="read_into(5)"),
    pytest.param(lambda r: r.read_be(9), (ValueError,), None, id="read_be(9)"),
    pytest.param(lambda r: Reader(5), TYPE, "int", id="Reader(5)"),
])
def test_reader_entries(call: Any, allowed: Any, named: Any) -> None:
    r = Reader.from_bytes(b"hello ", b"world\r\n")
    refused(lambda: call(r), allowed, named, lambda: reader_state(r))


# -- codecs --------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "allowed", "named"), [
    pytest.param(lambda: LengthPrefixed("be32", max_frame=2**64), TOO_BIG, None,
                 id="LengthPrefixed(max_frame=2**64)"),
    pytest.param(lambda: LengthPrefixed("be32", max_frame=1.5), TYPE, "float",
                 id="LengthPrefixed(max_frame=1.5)"),
    pytest.param(lambda: LengthPrefixed("be32", max_frame=True), TYPE, "bool",
                 id="LengthPrefixed(max_frame=True)"),
    pytest.param(lambda: LengthPrefixed("be64"), (ValueError,), None, id="LengthPrefixed('be64')"),
    pytest.param(lambda: LengthPrefixed(5), (TypeError, ValueError), None,
                 id="LengthPrefixed(5)"),
    pytest.param(lambda: Delimited(5), TYPE, "int", id="Delimited(5)"),
    pytest.param(lambda: Delimited(b""), (ValueError,), None, id="Delimited(b'')"),
    pytest.param(lambda: Delimited(b"\n", max_frame=2**64), TOO_BIG, None,
                 id="Delimited(max_frame=2**64)"),
])
def test_codec_construction(make: Any, allowed: Any, named: Any) -> None:
    refused(make, allowed, named, lambda: None)


@pytest.mark.parametrize(("call", "allowed", "named"), [
    pytest.param(lambda c, r: c.split(5), TYPE, "int", id="split(5)"),
    pytest.param(lambda c, r: c.split_views(r, allocator=5), (TypeError,), "int",
                 id="split_views(allocator=5)"),
])
def test_codec_calls(call: Any, allowed: Any, named: Any) -> None:
    codec = LengthPrefixed("be16")
    r = Reader.from_bytes(b"\x00\x02hi\x00\x03abc")
    refused(lambda: call(codec, r), allowed, named, lambda: reader_state(r))


# -- stream --------------------------------------------------------------------------


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair of loopback TCP sockets."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


@pytest.mark.parametrize(("call", "allowed", "named"), [
    pytest.param(lambda rx: rx.skip(0.5), TYPE, "float", id="skip(0.5)"),
    pytest.param(lambda rx: rx.read_exactly(1.5), TYPE, "float", id="read_exactly(1.5)"),
    pytest.param(lambda rx: rx.read_frame(1.5), TYPE, "float", id="read_frame(1.5)"),
    pytest.param(lambda rx: rx.read_be(2.0), TYPE, "float", id="read_be(2.0)"),
    pytest.param(lambda rx: rx.peek(1.5), TYPE, "float", id="peek(1.5)"),
    pytest.param(lambda rx: rx.read_until(5, 10), TYPE, "int", id="read_until(5, 10)"),
    pytest.param(lambda rx: rx.frames(5).__anext__(), TYPE, "int", id="frames(5)"),
])
def test_stream_reader_calls(call: Any, allowed: Any, named: Any) -> None:
    """Over loopback TCP: a refused read consumes nothing; the next read gets every byte."""
    async def main() -> None:
        client, server = tcp_pair()
        with client:
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(server))
            async with membuf.StreamReader(stream) as rx:
                client.sendall(b"hello world")
                assert (await rx.read_exactly(1)).to_bytes() == b"h"
                while len(rx) < 10:
                    await rx.peek(len(rx) + 1)
                before = len(rx)

                async def refused_call() -> None:
                    await call(rx)

                with pytest.raises(BaseException) as info:
                    with trio.fail_after(5):
                        await refused_call()
                assert isinstance(info.value, allowed), repr(info.value)
                assert named in str(info.value)
                assert len(rx) == before
                assert (await rx.read_exactly(10)).to_bytes() == b"ello world"

    trio.run(main)


@pytest.mark.parametrize(("kw", "allowed", "named"), [
    pytest.param({"chunk_size": 1.5}, TYPE, "float", id="chunk_size=1.5"),
    pytest.param({"chunk_size": 0}, (ValueError,), None, id="chunk_size=0"),
    pytest.param({"idle_trim": "x"}, TYPE, "str", id="idle_trim='x'"),
    pytest.param({"max_buffered": 2**64}, TOO_BIG, None, id="max_buffered=2**64"),
])
def test_stream_reader_construction(kw: dict[str, Any], allowed: Any, named: Any) -> None:
    async def main() -> None:
        client, server = tcp_pair()
        with client:
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(server))
            refused(lambda: membuf.StreamReader(stream, **kw), allowed, named, lambda: None)
            await stream.aclose()

    trio.run(main)


def test_stream_reader_refuses_what_it_cannot_read() -> None:
    refused(lambda: membuf.StreamReader(object()), TYPE, "object", lambda: None)


# -- media ---------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "allowed", "named"), [
    pytest.param(lambda a: FrameRing(1.5), TYPE, "float", id="FrameRing(1.5)"),
    pytest.param(lambda a: FrameRing(True), TYPE, "bool", id="FrameRing(True)"),
    pytest.param(lambda a: FrameRing(0), (ValueError,), None, id="FrameRing(0)"),
    pytest.param(lambda a: FrameRing(4, max_bytes=2**64), (ValueError,), None,
                 id="FrameRing(max_bytes=2**64)"),
    pytest.param(lambda a: rtmp.ChunkReader(None), TYPE, "NoneType", id="ChunkReader(None)"),
    pytest.param(lambda a: rtmp.ChunkReader(a, max_message=1.5), TYPE, "float",
                 id="ChunkReader(max_message=1.5)"),
    pytest.param(lambda a: rtmp.ChunkReader(a, max_partial=-1), (ValueError,), None,
                 id="ChunkReader(max_partial=-1)"),
    pytest.param(lambda a: rtmp.ChunkReader(a, min_chunk_bytes=0), (ValueError,), None,
                 id="ChunkReader(min_chunk_bytes=0)"),
    pytest.param(lambda a: rtmp.ServerSession(a, chunk_size=0), (ValueError,), None,
                 id="ServerSession(chunk_size=0)"),
    pytest.param(lambda a: rtmp.encode_chunks(9, b"x", chunk_size=0), (ValueError,), None,
                 id="encode_chunks(chunk_size=0)"),
    pytest.param(lambda a: rtmp.encode_chunks(9, b"x", chunk_size=True), TYPE, "bool",
                 id="encode_chunks(chunk_size=True)"),
    pytest.param(lambda a: rtmp.encode_chunks(300, b"x"), (ValueError,), None,
                 id="encode_chunks(type 300)"),
    pytest.param(lambda a: rtmp.encode_chunks(9, b"x", timestamp=-1), (ValueError,), None,
                 id="encode_chunks(timestamp=-1)"),
    pytest.param(lambda a: rtmp.encode_chunks(9, b"x", stream_id=2**32), (ValueError,), None,
                 id="encode_chunks(stream_id=2**32)"),
    pytest.param(lambda a: Limits(max_memory=2**64), (ValueError,), None,
                 id="Limits(max_memory=2**64)"),
    pytest.param(lambda a: Limits(idle_timeout="5"), TYPE, "str", id="Limits(idle_timeout='5')"),
    pytest.param(lambda a: RtmpServer(ring_size=1.5, live=False), TYPE, "float",
                 id="RtmpServer(ring_size=1.5)"),
    pytest.param(lambda a: RtmpServer(limits={"max_memory": 1}, live=False), TYPE, "dict",
                 id="RtmpServer(limits=dict)"),
])
def test_media_construction(make: Any, allowed: Any, named: Any) -> None:
    a = Allocator()
    refused(lambda: make(a), allowed, named, lambda: a.stats())


OBU_STREAM = b"\x12\x00" + b"\x32\x03\x10\x00\x00"


@pytest.mark.parametrize(("call", "allowed", "named"), [
    pytest.param(lambda r: av1.read_obu(r, max_size=1.5), TYPE, "float", id="read_obu(max_size=1.5)"),
    pytest.param(lambda r: av1.read_obu(r, rest=True), TYPE, "bool", id="read_obu(rest=True)"),
    pytest.param(lambda r: av1.read_ivf_frame(r, max_size=1.5), TYPE, "float",
                 id="read_ivf_frame(max_size=1.5)"),
    pytest.param(lambda r: flv.read_tag(r, max_size=1.5), TYPE, "float",
                 id="read_tag(max_size=1.5)"),
])
def test_media_parser_calls(call: Any, allowed: Any, named: Any) -> None:
    r = Reader.from_bytes(OBU_STREAM)
    refused(lambda: call(r), allowed, named, lambda: reader_state(r))


def test_ring_push_of_a_non_frame_changes_nothing() -> None:
    with Allocator() as a:
        ring = FrameRing(2)
        rm = RecyclableMemory(a)
        rm.next_n(10)
        ring.push(rm)
        refused(lambda: ring.push(5), (TypeError,), "int",   # type: ignore[arg-type]
                lambda: (len(ring), ring.bytes, ring.written, a.stats().in_use))
        ring.clear()
        assert a.stats().in_use == 0


def test_chunk_reader_read_of_a_non_reader_changes_nothing() -> None:
    with Allocator() as a:
        cr = rtmp.ChunkReader(a)
        refused(lambda: cr.read_message(b"\x02"), (TypeError,), "bytes",  # type: ignore[arg-type]
                lambda: (cr.chunks, cr.bytes_read, cr.partial_bytes, a.stats().in_use))
