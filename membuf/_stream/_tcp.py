"""TCP for every library: ``open_tcp``, ``serve_tcp``, ``start_server``, and the handler runner.

Each entry point asks sniffio which library runs (anyio reports its backend:
``"trio"`` or ``"asyncio"``; uvloop is ``"asyncio"``) and hands the same
:class:`StreamOptions` to that library's adapter (``_trio``, ``_asyncio``).

:func:`run_handler` runs ``await handler(conn)`` for a server and then closes
the connection, whatever the handler did: an exception closes that connection
only (logged with its traceback on the ``membuf.stream`` logger), a peer that
reset or left is one line at debug level, and the connection's memory is
reclaimed even when the handler broke the reader's state, and even when a
log handler keeps the record: the finished frames of the exception's
traceback are cleared (their line numbers stay), so the views a handler held
in its locals do not pin the connection's memory. Cancellation propagates.
"""

from __future__ import annotations

import logging
import ssl as _ssl
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import sniffio

from ..allocator import Allocator
from ._connection import Connection
from ._errors import describe, is_disconnect
from ._options import StreamOptions

if TYPE_CHECKING:  # pragma: no cover - typing only
    from typing import Unpack

    from ._options import OptionKeywords

__all__ = ["TASK_STATUS_IGNORED", "current_library", "log", "open_tcp", "run_handler",
           "serve_tcp", "start_server"]

log = logging.getLogger("membuf.stream")

Handler = Callable[[Connection], Awaitable[object]]


class _Ignored:
    """``task_status`` when ``serve_tcp`` is awaited directly rather than started."""

    def started(self, value: object = None) -> None:
        pass

    def __repr__(self) -> str:
        return "TASK_STATUS_IGNORED"


TASK_STATUS_IGNORED: Any = _Ignored()


def current_library() -> str:
    """``"trio"`` or ``"asyncio"`` (anyio reports its backend).

    Raises:
        RuntimeError: no event loop runs, or one membuf has no adapter for.
    """
    try:
        lib = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        raise RuntimeError(
            "membuf's network calls must be awaited inside trio, asyncio or anyio"
        ) from None
    if lib not in ("trio", "asyncio"):
        raise RuntimeError(f"membuf runs under trio, asyncio and anyio, not {lib}")
    return lib


def _allocator(allocator: Any) -> None:
    if allocator is not None and not isinstance(allocator, Allocator):
        raise TypeError(f"allocator must be a membuf.Allocator or None, got "
                        f"{type(allocator).__name__}")


def _context(ssl: Any, server_side: bool) -> _ssl.SSLContext | None:
    if ssl is None or ssl is False:
        return None
    if isinstance(ssl, _ssl.SSLContext):
        return ssl
    if ssl is True and not server_side:
        return _ssl.create_default_context()
    if ssl is True:
        raise TypeError("a TLS server needs ssl=an ssl.SSLContext holding its certificate")
    raise TypeError(f"ssl must be an ssl.SSLContext (or True for a client), got {type(ssl).__name__}")


async def open_tcp(
    host: str, port: int, *, ssl: _ssl.SSLContext | bool | None = None,
    server_hostname: str | None = None, allocator: Allocator | None = None,
    options: StreamOptions | None = None, **kw: Unpack[OptionKeywords],
) -> Connection:
    """Connect to ``host:port`` (TLS with ``ssl=``) and return a :class:`Connection`.

    Works under trio, asyncio (uvloop included) and anyio on either backend.

    Args:
        ssl: an ``ssl.SSLContext``, or ``True`` for ``ssl.create_default_context()``.
        server_hostname: the name the certificate must match (default: ``host``).
        allocator: one to share, or ``None`` for the connection's own.
        options, chunk_size, max_buffered, idle_trim: see :class:`StreamOptions`.

    Raises:
        OSError: the connection could not be made.
        ssl.SSLError (asyncio) / trio.BrokenResourceError (trio): the handshake failed.
    """
    opts = StreamOptions.make(options, **kw)
    _allocator(allocator)
    ctx = _context(ssl, server_side=False)
    if server_hostname is not None and ctx is None:
        raise TypeError("server_hostname is only meaningful with ssl=")
    if current_library() == "trio":
        from . import _trio

        conn: Connection = await _trio.open_tcp(host, port, ctx, server_hostname, allocator, opts)
    else:
        from . import _asyncio

        conn = await _asyncio.open_tcp(host, port, ctx, server_hostname or (host if ctx else None),
                                       allocator, opts)
    return conn


async def serve_tcp(
    handler: Handler, port: int, host: str | None = "127.0.0.1",
    allocator: Allocator | None = None, *, ssl: _ssl.SSLContext | None = None,
    backlog: int | None = None, handler_nursery: Any = None,
    options: StreamOptions | None = None, task_status: Any = TASK_STATUS_IGNORED,
    **kw: Unpack[OptionKeywords],
) -> None:
    """Serve TCP connections forever, calling ``await handler(conn)`` for each.

    Start it like :func:`trio.serve_tcp`: ``listeners = await nursery.start(serve_tcp,
    handler, 0)`` under trio, ``await tg.start(serve_tcp, handler, 0)`` under anyio (on
    either backend), or as a task under asyncio. It binds, starts accepting and returns
    the listeners (port 0 picks a free one: ``listeners[0].socket.getsockname()[1]``).

    Each connection gets its own allocator unless ``allocator`` is given (then every
    connection shares it and frees exactly what it owned). When the handler returns or
    raises, the connection is closed and every byte it owned is freed; a handler
    exception closes that connection only and is logged (logger ``membuf.stream``), a
    peer that reset or left is logged at debug level, and the server keeps serving.
    Cancelling it stops accepting and cancels the handlers.

    Args:
        handler: ``async def handler(conn: Connection)``.
        port: TCP port (0: any free port).
        host: address to bind (``None``: every interface).
        allocator: one allocator for every connection, or ``None`` for one each.
        ssl: an ``ssl.SSLContext`` with the server's certificate: TLS on every connection.
        backlog: as for ``listen``; handler_nursery: trio only, as for trio.serve_tcp.
        options, chunk_size, max_buffered, idle_trim: see :class:`StreamOptions`.

    Raises:
        OSError: the port could not be bound.
    """
    opts = StreamOptions.make(options, **kw)
    _allocator(allocator)
    ctx = _context(ssl, server_side=True)
    if current_library() == "trio":
        from . import _trio

        await _trio.serve_tcp(handler, port, host, allocator, opts, ctx, backlog,
                              handler_nursery, task_status)
        return
    if handler_nursery is not None:
        raise TypeError("handler_nursery is trio's: under asyncio handlers run in tasks")
    from . import _asyncio

    await _asyncio.serve_tcp(handler, port, host, allocator, opts, ctx, backlog, task_status)


async def start_server(
    handler: Handler, host: Any = None, port: Any = None, *,
    ssl: _ssl.SSLContext | None = None, allocator: Allocator | None = None,
    options: StreamOptions | None = None, **kwds: Any,
) -> Any:
    """asyncio's ``start_server`` for membuf connections: returns the ``asyncio.Server``.

    ``await handler(conn)`` runs in a task for each connection, which is closed
    after it (as under :func:`serve_tcp`). Closing the server stops accepting;
    handlers run on, as with ``asyncio.start_server``.

    Args:
        handler: ``async def handler(conn: Connection)``.
        host, port, ssl: as for ``asyncio.start_server``.
        allocator: one allocator for every connection, or ``None`` for one each.
        options, chunk_size, max_buffered, idle_trim: see :class:`StreamOptions`;
        any other keyword goes to ``loop.create_server`` (``backlog``, ``reuse_port``...).

    Raises:
        RuntimeError: not running under asyncio (under trio or anyio, start
            :func:`serve_tcp` in a nursery / task group).
        OSError: the port could not be bound.
    """
    names = {"chunk_size", "max_buffered", "idle_trim"}
    opts = StreamOptions.make(options, **{k: v for k, v in kwds.items() if k in names})
    server_kw = {k: v for k, v in kwds.items() if k not in names}
    _allocator(allocator)
    ctx = _context(ssl, server_side=True)
    if current_library() != "asyncio":
        raise RuntimeError("start_server is asyncio's; under trio or anyio use "
                           "`await nursery.start(membuf.serve_tcp, handler, port)`")
    from . import _asyncio

    return await _asyncio.start_server(handler, host, port, ctx, allocator, opts, server_kw)


async def run_handler(handler: Handler, conn: Connection) -> None:
    """``await handler(conn)``, then close ``conn`` whatever happened (see the module)."""
    try:
        await handler(conn)
    except Exception as exc:
        if is_disconnect(exc):
            log.debug("connection %s ended: %s", conn.peer, describe(exc))
        else:
            log.exception("connection handler %r failed; connection closed (peer %s)",
                          handler, conn.peer)
        _forget_locals(exc)       # a kept log record must not keep the handler's views
        del exc
    finally:
        try:
            await conn.aclose()
        except Exception as exc:      # a broken stream may refuse a graceful close
            log.debug("closing connection %s: %s", conn.peer, describe(exc))


def _forget_locals(exc: BaseException) -> None:
    """Clear the locals of the finished frames in ``exc``'s tracebacks (its cause,
    context and group members too); frames still running are left alone."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)
        todo += [x for x in (e.__cause__, e.__context__) if x is not None]
        group = getattr(e, "exceptions", None)
        if isinstance(group, tuple):
            todo += group
