"""Writer: append encoded fields and payload references, take them as a Memory.

Strategy. Fields are encoded straight into the free tail of the current chunk
(native memory from the Writer's allocator, else a ``bytearray``), so a small
field costs a bounds check and a few stores. Consecutive writes form one run,
and a run becomes one segment of the output only when something interrupts
it: ``write_ref`` (a payload appended by reference, never copied), a full
chunk, or ``take()``. ``take()`` returns the segments as a Memory (a
``RecyclableMemory`` that owns the native runs when there is an allocator) and
keeps the chunk's unused tail for the next message, so a stream of small
messages costs one chunk per ``chunk_size`` bytes, not one per message.
After the allocator's ``reset()`` the Writer keeps what it wrote as plain
references (still mapped, nobody else's) and frees none of it.

The compiled Writer (``membuf._core.Writer``, native/core/writer.c) is the
default; :class:`PyWriter` below is the executable reference with the same
results and errors, selected by ``MEMBUF_PURE_PYTHON=1``.

>>> w = Writer()
>>> w.write_byte(3); w.write_be(2, 258); w.write_leb128(300); w.write_ref(b"payload")
>>> len(w), bytes(w.take().to_bytes()), len(w)
(12, b'\\x03\\x01\\x02\\xac\\x02payload', 0)

Not thread-safe: one Writer per task. Native bytes written but not taken
are given back when the Writer is closed or collected.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from . import _core
from .memory import Memory, RecyclableMemory, as_view, from_views

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .allocator import Allocator

__all__ = ["PyWriter", "Writer"]


def _make_memory(allocator: Any, segs: list[memoryview], addrs: list[int | None], size: int) -> Memory:
    """The Memory a take() returns: owned native runs in a RecyclableMemory."""
    if allocator is None:
        return from_views(segs, size)
    rm = RecyclableMemory(allocator)
    for seg, addr in zip(segs, addrs, strict=True):
        if addr is None:
            rm.push(seg)                       # a reference (or a bytearray run)
        else:
            rm._append_owned(seg, addr)
    return rm


def _int(v: Any, what: str) -> int:
    if type(v) is not int and (not isinstance(v, int) or isinstance(v, bool)):
        raise TypeError(f"{what} needs an int, got {type(v).__name__}")
    return int(v)


def _unsigned(v: Any, bits: int, what: str) -> int:
    v = _int(v, what)
    if not 0 <= v < 1 << bits:
        top = "2**64-1" if bits == 64 else str((1 << bits) - 1)
        raise ValueError(f"{what}: {v} is out of range 0..{top}")
    return v


def _width(n: Any, what: str) -> int:
    n = _int(n, what)
    if not 1 <= n <= 8:
        raise ValueError(f"{what}(n, v) needs 1 <= n <= 8, got n={n}")
    return n


class PyWriter:
    """The pure-Python Writer: the reference the compiled one is tested against.

    Args:
        allocator: native chunks come from it (and ``take`` returns a
            RecyclableMemory owning them); ``None``: bytearray chunks.
        chunk_size: the size of each new chunk (a larger field gets its own).
    """

    def __init__(self, allocator: Allocator | None = None, chunk_size: int = 4096) -> None:
        chunk_size = _int(chunk_size, "Writer chunk_size")
        if not 1 <= chunk_size <= 1 << 30:
            raise ValueError(f"Writer chunk_size must be 1..2**30, got {chunk_size}")
        if allocator is not None and not hasattr(allocator, "_malloc_addr"):
            raise TypeError(
                f"Writer allocator must be a membuf.Allocator or None, got {type(allocator).__name__}"
            )
        self._allocator = allocator
        self._epoch: int | None = None
        self._chunk_size = chunk_size
        self._segs: list[memoryview] = []
        self._addrs: list[int | None] = []
        self._cur: memoryview | None = None
        self._cur_addr = 0
        self._cap = self._run_start = self._pos = 0
        self._size = 0

    # -- chunks --------------------------------------------------------------

    def _epoch_moved(self) -> bool:
        return (self._allocator is not None and self._epoch is not None
                and self._allocator._epoch != self._epoch)

    def _drop_chunk(self) -> None:
        self._cur = None
        self._cur_addr = 0
        self._cap = self._run_start = self._pos = 0

    def _close_run(self) -> None:
        if self._pos > self._run_start:
            assert self._cur is not None
            self._segs.append(self._cur[self._run_start : self._pos])
            self._addrs.append(self._cur_addr + self._run_start if self._cur_addr else None)
            self._run_start = self._pos

    def _retire_chunk(self) -> None:
        if self._cur is not None and self._cur_addr and self._pos < self._cap:
            assert self._allocator is not None
            self._allocator._free_batch([self._cur_addr + self._pos, self._cap - self._pos])
        self._drop_chunk()

    def _forget_native(self) -> None:
        """The allocator was reset: it forgot our ranges. Their bytes stay mapped and are
        nobody else's, so keep them as references that nobody frees."""
        self._addrs = [None] * len(self._addrs)
        self._cur_addr = 0
        self._epoch = None

    def _ensure(self, n: int) -> None:
        if self._cap - self._pos >= n:
            return
        if self._epoch_moved():             # first: a reset chunk's tail is not ours to free
            self._forget_native()
        self._close_run()
        self._retire_chunk()
        want = max(n, self._chunk_size)
        if self._allocator is not None:
            view, addr = self._allocator._malloc_addr(want)
            if self._epoch is None:
                self._epoch = self._allocator._epoch
        else:
            view, addr = memoryview(bytearray(want)), 0
        self._cur, self._cur_addr = view, addr
        self._cap = len(view)
        self._run_start = self._pos = 0

    def _put(self, data: bytes) -> None:
        n = len(data)
        if self._cap - self._pos < n:
            self._ensure(n)
        assert self._cur is not None
        self._cur[self._pos : self._pos + n] = data
        self._pos += n
        self._size += n

    # -- the write calls -------------------------------------------------------

    def write(self, b: Any) -> None:
        """Copy a bytes-like in (across chunks as needed)."""
        src = memoryview(b)
        if not src.c_contiguous:
            raise BufferError("memoryview: underlying buffer is not C-contiguous")
        src = src.cast("B")
        i, left = 0, len(src)
        while left:
            if self._cap == self._pos:
                self._ensure(min(left, self._chunk_size))
            assert self._cur is not None
            k = min(self._cap - self._pos, left)
            self._cur[self._pos : self._pos + k] = src[i : i + k]
            self._pos += k
            self._size += k
            i += k
            left -= k

    def write_ref(self, view: Any) -> None:
        """Append a bytes-like by reference: its bytes are never copied."""
        mv = as_view(view)
        if len(mv):
            self._close_run()
            self._segs.append(mv)
            self._addrs.append(None)
        self._size += len(mv)

    def write_byte(self, v: int) -> None:
        """One byte, 0..255."""
        self._put(bytes((_unsigned(v, 8, "write_byte"),)))

    def write_be(self, n: int, v: int) -> None:
        """``v`` as ``n`` big-endian bytes (1 <= n <= 8)."""
        n = _width(n, "write_be")
        self._put(_unsigned(v, 8 * n, "write_be").to_bytes(n, "big"))

    def write_le(self, n: int, v: int) -> None:
        """``v`` as ``n`` little-endian bytes (1 <= n <= 8)."""
        n = _width(n, "write_le")
        self._put(_unsigned(v, 8 * n, "write_le").to_bytes(n, "little"))

    def write_leb128(self, v: int) -> None:
        """An unsigned LEB128 varint (0..2**64-1)."""
        v = _unsigned(v, 64, "write_leb128")
        out = bytearray()
        while True:
            b, v = v & 0x7F, v >> 7
            out.append(b | 0x80 if v else b)
            if not v:
                break
        self._put(bytes(out))

    def write_sleb128(self, v: int) -> None:
        """A signed LEB128 varint (-2**63..2**63-1)."""
        v = _int(v, "write_sleb128")
        if not -(1 << 63) <= v < 1 << 63:
            raise ValueError(f"write_sleb128: {v} is out of range -2**63..2**63-1")
        out = bytearray()
        while True:
            b, v = v & 0x7F, v >> 7
            done = (v == 0 and not b & 0x40) or (v == -1 and b & 0x40)
            out.append(b if done else b | 0x80)
            if done:
                break
        self._put(bytes(out))

    def reserve(self, n: int) -> memoryview:
        """A writable view of the next ``n`` bytes, to fill in later (back-patching)."""
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"reserve size must be an int, got {type(n).__name__}")
        if n < 0:
            raise ValueError(f"reserve size must be >= 0, got {n}")
        self._ensure(n)
        if self._cur is None:
            return memoryview(bytearray())
        slot = self._cur[self._pos : self._pos + n]
        self._pos += n
        self._size += n
        return slot

    def take(self) -> Memory:
        """Everything written so far, as a Memory; the Writer is empty again."""
        if self._epoch_moved():
            self._forget_native()
        self._close_run()
        m = _make_memory(self._allocator, self._segs, self._addrs, self._size)
        self._segs, self._addrs, self._size = [], [], 0
        return m

    def close(self) -> None:
        """Give back the native bytes not taken (also done when the Writer is collected)."""
        if self._allocator is None:
            return
        if self._epoch_moved():
            self._forget_native()
            return
        pairs: list[int] = []
        for seg, addr in zip(self._segs, self._addrs, strict=True):
            if addr is not None:
                pairs += (addr, len(seg))
        if self._cur is not None and self._cur_addr and self._run_start < self._cap:
            pairs += (self._cur_addr + self._run_start, self._cap - self._run_start)
        self._drop_chunk()
        self._segs, self._addrs, self._size = [], [], 0
        if pairs:
            self._allocator._free_batch(pairs)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:      # pragma: no cover - like the compiled one: never raise here
            pass

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        n = len(self._segs) + (self._pos > self._run_start)
        return f"<membuf.Writer {self._size} bytes in {n} segments{', native' if self._allocator else ''}>"


_core._bind_writer(_make_memory, as_view)

PURE_PYTHON = os.environ.get("MEMBUF_PURE_PYTHON", "") not in ("", "0")
# The compiled Writer has PyWriter's interface exactly (the differential tests check it).
Writer: type[PyWriter] = PyWriter if PURE_PYTHON else _core.Writer  # type: ignore[assignment]
