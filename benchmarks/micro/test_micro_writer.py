"""Writer calls against the plain-Python encoders a user would write into a bytearray.

Per round: 1000 fields (or frames) into a fresh Writer (bytearray chunks, the
default) ending with ``take()``, against the same bytes built in a bytearray.
Every row's result is compared as bytes with the expected encoding (for
membuf, the taken Memory joined outside the timed code).

The frame rows differ on purpose in what they do with the payload: membuf's
``encode`` appends it by reference (zero-copy, what a relay or an echo wants),
the bytearray forms copy it; that is the work a hand-written encoder does.
"""

from __future__ import annotations

import random
from struct import Struct

import pytest

from membuf import Writer
from membuf.codecs import LengthPrefixed

N = 1000
R = range(N)


def _joined(result: object) -> bytes:
    """A row's output as bytes (a taken Memory joined; untimed)."""
    return bytes(result)  # type: ignore[call-overload]


# -- write_be(4) -------------------------------------------------------------------------------

BE4 = "writer: write_be(4)"


@pytest.fixture(scope="module")
def be32_values():
    rng = random.Random(14)
    values = [rng.getrandbits(32) for _ in R]
    return values, b"".join(v.to_bytes(4, "big") for v in values)


def writer_write_be4(values: list[int]) -> object:
    w = Writer()
    write_be = w.write_be
    for v in values:
        write_be(4, v)
    return w.take()


def struct_pack_into(values: list[int]) -> bytearray:
    """The fastest hand-written form: a bytearray sized up front, ``pack_into`` at an offset."""
    pack_into = Struct(">I").pack_into
    buf = bytearray(4 * len(values))
    pos = 0
    for v in values:
        pack_into(buf, pos, v)
        pos += 4
    return buf


def bytearray_append_pack(values: list[int]) -> bytearray:
    """The usual form when the size is not known up front: ``buf += pack(v)``."""
    pack = Struct(">I").pack
    buf = bytearray()
    for v in values:
        buf += pack(v)
    return buf


@pytest.mark.parametrize("form", [writer_write_be4, struct_pack_into, bytearray_append_pack],
                         ids=["membuf", "struct_pack_into", "bytearray_append_pack"])
def test_write_be4(micro, be32_values, form):
    values, want = be32_values
    assert _joined(micro(form, lambda: (values,), group=BE4, n=N)) == want


# -- write_leb128 ------------------------------------------------------------------------------

LEB = "writer: write_leb128, 3-byte values"


@pytest.fixture(scope="module")
def leb_values(uleb):
    rng = random.Random(15)
    values = [rng.randint(1 << 14, (1 << 21) - 1) for _ in R]
    return values, b"".join(map(uleb, values))


def writer_write_leb128(values: list[int]) -> object:
    w = Writer()
    write_leb128 = w.write_leb128
    for v in values:
        write_leb128(v)
    return w.take()


def inline_varint_encoder(values: list[int]) -> bytearray:
    """The encoder written inline in the loop (no call per value), appending to a bytearray."""
    buf = bytearray()
    append = buf.append
    for v in values:
        while v >= 0x80:
            append((v & 0x7F) | 0x80)
            v >>= 7
        append(v)
    return buf


@pytest.mark.parametrize("form", [writer_write_leb128, inline_varint_encoder],
                         ids=["membuf", "inline_varint_encoder"])
def test_write_leb128(micro, leb_values, form):
    values, want = leb_values
    assert _joined(micro(form, lambda: (values,), group=LEB, n=N)) == want


# -- LEB128-prefixed frames: small (16..300 B) and large (64 KiB) ------------------------------

SIZES = {"16..300 B": (N, 16, 300), "64 KiB": (100, 65536, 65536)}
CODEC = LengthPrefixed("leb128")


@pytest.fixture(scope="module")
def payloads(leb128_frames):
    out = {}
    for label, (count, lo, hi) in SIZES.items():
        data, frames = leb128_frames(count, lo, hi, seed=16)
        out[label] = frames, data
    return out


def codec_encode(frames: list[bytes]) -> object:
    """``LengthPrefixed.encode(p, writer)``: the prefix written, the payload by reference."""
    w = Writer()
    encode = CODEC.encode
    for p in frames:
        encode(p, w)
    return w.take()


def writer_leb128_write_ref(frames: list[bytes]) -> object:
    """The same frames with the Writer's field calls (what a hand-made codec on it does)."""
    w = Writer()
    write_leb128, write_ref = w.write_leb128, w.write_ref
    for p in frames:
        write_leb128(len(p))
        write_ref(p)
    return w.take()


def bytearray_inline_varint(frames: list[bytes]) -> bytearray:
    """By hand: the length as an inline varint, then the payload copied in."""
    buf = bytearray()
    append = buf.append
    for p in frames:
        v = len(p)
        while v >= 0x80:
            append((v & 0x7F) | 0x80)
            v >>= 7
        append(v)
        buf += p
    return buf


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("form", [codec_encode, writer_leb128_write_ref, bytearray_inline_varint],
                         ids=["membuf_encode", "membuf_write_ref", "bytearray_inline_varint"])
def test_encode_frames(micro, payloads, form, size):
    frames, want = payloads[size]
    got = micro(form, lambda: (frames,), group=f"writer: encode LEB128-prefixed frames, {size}",
                n=len(frames), unit="frame")
    assert _joined(got) == want
