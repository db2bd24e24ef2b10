"""TLS for trio that decrypts straight into native memory: an ``ssl.SSLObject`` over BIOs.

Strategy. :class:`TLSStream` drives one :class:`ssl.SSLObject` over two
:class:`ssl.MemoryBIO`\\ s: ciphertext from the transport stream is written into
the incoming BIO, and the reader's source (:class:`TrioTLSSource`) calls
``SSLObject.read(n, chunk_view)``, which decrypts straight into the engine's
native chunk: no plaintext copy (``stats().copied`` stays 0), as many records
as have arrived per receive. Sends coalesce small segments into record-sized
pieces (every byte is encrypted, that is, copied, anyway), ``write`` them into
the SSLObject and flush the outgoing BIO to the transport.

One task flushes at a time (a flag, not a lock, so the common uncontended send
costs no extra checkpoint); a reader that finds outgoing bytes queued by the
SSLObject (a post-handshake message) flushes them only when no send is in
progress, because the running send's loop picks them up anyway.

End of stream: a ``close_notify`` ends the plaintext stream cleanly; the
transport ending without one is treated the same (``suppress_ragged_eofs``,
the default of :meth:`ssl.SSLContext.wrap_socket`). A failed handshake or a
broken record is ``trio.BrokenResourceError`` with the ``ssl.SSLError`` as its
cause. TLS has no half-close: ``send_eof`` is ``NotImplementedError``, as on
asyncio's TLS transports.
"""

from __future__ import annotations

import ssl
from typing import Any, cast

import trio

from ._errors import busy, closed
from ._receive import Source
from ._send import Sender, coalesce
from ._trio import idle_wait

__all__ = ["TLSSender", "TLSStream", "TrioTLSSource"]

_CIPHER = 64 << 10        # ciphertext bytes asked of the transport per receive
_CLOSE_GRACE = 1.0        # seconds aclose() spends sending close_notify at most


class TLSStream(trio.abc.Stream):
    """A TLS connection over a trio stream (``transport_stream``), for membuf's reader.

    Made by :func:`membuf.open_tcp` / :func:`membuf.serve_tcp` with ``ssl=``; usable as
    any trio stream too (``receive_some`` copies).

    Raises (from the I/O methods):
        trio.BrokenResourceError: the handshake failed, a record was bad, or the
            transport broke (the ``ssl.SSLError`` is the cause).
        trio.ClosedResourceError: this stream was closed.
    """

    def __init__(self, transport_stream: trio.abc.Stream, ssl_context: ssl.SSLContext, *,
                 server_side: bool, server_hostname: str | None = None) -> None:
        self.transport_stream = transport_stream
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = ssl_context.wrap_bio(self._in, self._out, server_side=server_side,
                                         server_hostname=None if server_side else server_hostname)
        self._peer_closed = False
        self._closed = False
        self._flushing = False
        self._flush_done: trio.Event | None = None

    @property
    def ssl_object(self) -> ssl.SSLObject:
        """The SSLObject (peer certificate, cipher, version, ALPN...)."""
        return self._obj

    # -- handshake --------------------------------------------------------------

    async def do_handshake(self) -> None:
        """Run the TLS handshake to completion.

        Raises:
            trio.BrokenResourceError: it failed (certificate, protocol) or the peer left.
        """
        while True:
            try:
                self._obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                if not await self._fill():
                    raise trio.BrokenResourceError(
                        "the peer closed the connection during the TLS handshake") from None
            except ssl.SSLError as exc:
                try:
                    await self._flush()           # the alert, so the peer learns why
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                raise trio.BrokenResourceError(f"TLS handshake failed: {exc}") from exc
        await self._flush()

    # -- receiving ----------------------------------------------------------------

    async def _fill(self) -> bool:
        """Move one receive of ciphertext into the incoming BIO; False at its end."""
        data = await self.transport_stream.receive_some(_CIPHER)
        if not data:
            self._in.write_eof()
            return False
        self._in.write(data)
        return True

    def read_into(self, buf: memoryview, size: int) -> int:
        """Decrypt what has arrived into ``buf[:size]``.

        Returns the bytes decrypted (> 0), 0 at the end of the TLS stream, or -1
        when more ciphertext is needed first.
        """
        obj = self._obj
        got = 0
        try:
            while got < size:
                k = cast(int, obj.read(size - got, buf[got:] if got else buf))
                if not k:                          # close_notify
                    self._peer_closed = True
                    break
                got += k
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):   # transport ended without close_notify
            self._peer_closed = True
        except ssl.SSLError as exc:
            raise trio.BrokenResourceError(f"TLS record error: {exc}") from exc
        if got:
            return got
        return 0 if self._peer_closed else -1

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Up to ``max_bytes`` decrypted bytes (a copy); ``b""`` at the end of the stream."""
        if self._closed:
            raise closed("trio", "this TLS stream was closed")
        n = max_bytes or _CIPHER
        buf = bytearray(n)
        view = memoryview(buf)
        while True:
            k = self.read_into(view, n)
            if k >= 0:
                view.release()
                del buf[k:]
                return bytes(buf)
            await self._flush_if_free()
            await self._fill()

    # -- sending --------------------------------------------------------------------

    def _write(self, data: Any) -> None:
        if self._closed:
            raise closed("trio", "this TLS stream was closed")
        try:
            self._obj.write(data)
        except ssl.SSLError as exc:
            raise trio.BrokenResourceError(f"TLS write failed: {exc}") from exc

    async def _flush(self) -> None:
        """Send everything in the outgoing BIO (one flushing task at a time)."""
        while self._flushing:
            if self._flush_done is None:
                self._flush_done = trio.Event()
            await self._flush_done.wait()
        self._flushing = True
        try:
            out = self._out
            while True:
                data = out.read()
                if not data:
                    break
                await self.transport_stream.send_all(data)
        finally:
            self._flushing = False
            done, self._flush_done = self._flush_done, None
            if done is not None:
                done.set()

    async def _flush_if_free(self) -> bool:
        """Flush pending output unless a flush is already running; True if it flushed."""
        if self._out.pending and not self._flushing:
            await self._flush()
            return True
        return False

    async def send_all(self, data: Any) -> None:
        self._write(data)
        await self._flush()

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    # -- closing ------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Send close_notify (best effort, at most a second) and close the transport."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            with trio.move_on_after(_CLOSE_GRACE) as scope:
                scope.shield = True
                try:
                    self._obj.unwrap()              # queues our close_notify
                except ssl.SSLError:
                    pass                            # the peer's has not arrived: expected
                await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await self.transport_stream.aclose()


class TrioTLSSource(Source):
    """Receives of a :class:`TLSStream`: ``SSLObject.read`` straight into the chunk."""

    lib = "trio"

    def __init__(self, stream: TLSStream) -> None:
        self.stream = stream

    async def receive(self, needed: int, exact: bool = True) -> bool:
        eng = self.engine
        tls = self.stream
        if eng.busy:
            raise busy("trio")
        if eng.closed:
            raise closed("trio")
        if eng.eof:
            await trio.lowlevel.checkpoint()
            return False
        eng.check(needed, exact)
        await trio.lowlevel.checkpoint_if_cancelled()
        eng.busy = True
        waited = False
        try:
            while True:
                size = eng.plan(needed)
                buf = eng.buffer(size)
                try:
                    n = tls.read_into(buf, size)
                finally:
                    del buf
                if n >= 0:
                    break
                eng.drop()
                await self._wait()
                waited = True
                if eng.closed:
                    raise closed("trio")
        except BaseException:
            eng.drop()
            raise
        finally:
            eng.busy = False
        if n:
            eng.commit(n)
        else:
            eng.drop()
            eng.eof = True
        if not await tls._flush_if_free() and not waited:   # (e.g. a key update's answer)
            await trio.lowlevel.cancel_shielded_checkpoint()
        return n > 0

    async def _wait(self) -> None:
        eng = self.engine
        tls = self.stream
        await tls._flush_if_free()
        await idle_wait(eng, tls._fill)

    async def aclose(self) -> None:
        await self.stream.aclose()


class TLSSender(Sender):
    """Sends on a :class:`TLSStream`: small segments coalesced into record-sized writes."""

    lib = "trio"

    def __init__(self, stream: TLSStream) -> None:
        self.stream = stream

    async def send(self, segments: list[memoryview]) -> None:
        tls = self.stream
        for piece in coalesce(segments):
            tls._write(piece)
        await tls._flush()

    async def send_eof(self) -> None:
        raise NotImplementedError("TLS connections cannot half-close (send_eof)")

    async def aclose(self) -> None:
        await self.stream.aclose()

