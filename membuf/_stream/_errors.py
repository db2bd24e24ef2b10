"""Socket errors in each library's own words, and which errors are routine disconnects.

A stream error is raised as the running library's user expects it:

============  ================================  ================================
library       the stream broke (reset, EPIPE)   it was closed (by this side)
============  ================================  ================================
trio          ``trio.BrokenResourceError``      ``trio.ClosedResourceError``
anyio         ``anyio.BrokenResourceError``     ``anyio.ClosedResourceError``
asyncio       the ``OSError`` itself            ``ConnectionAbortedError``
              (``ConnectionResetError``...)
============  ================================  ================================

Two tasks reading one reader at once is ``trio.BusyResourceError``,
``anyio.BusyResourceError`` or ``RuntimeError`` (as asyncio's own
``StreamReader`` says it). :func:`is_disconnect` tells a server which handler
exceptions are the peer leaving (logged as one line at debug level) rather
than a bug (logged with its traceback).
"""

from __future__ import annotations

import errno
import ssl
import sys
from typing import Any

from ..errors import IncompleteReadError

__all__ = ["broken", "busy", "closed", "describe", "is_disconnect", "peer_of"]

# the socket was closed under us (WSAENOTSOCK is Windows' name for it)
CLOSED_ERRNOS = {errno.EBADF, getattr(errno, "WSAENOTSOCK", 10038)}


def closed(lib: str, what: str = "this StreamReader was closed") -> Exception:
    """The error for using a stream this side already closed."""
    if lib == "trio":
        import trio

        return trio.ClosedResourceError(what)
    if lib == "anyio":
        import anyio

        return anyio.ClosedResourceError(what)
    return ConnectionAbortedError(what)


def busy(lib: str) -> Exception:
    what = "another task is already reading from this StreamReader"
    if lib == "trio":
        import trio

        return trio.BusyResourceError(what)
    if lib == "anyio":
        import anyio

        return anyio.BusyResourceError(what)
    return RuntimeError(what)


def broken(lib: str, exc: BaseException | None) -> Exception:
    """The error for a connection that broke with ``exc`` (an OSError, an SSLError...)."""
    if isinstance(exc, OSError) and exc.errno in CLOSED_ERRNOS:
        return closed(lib, "this socket was already closed")
    if lib == "trio":
        import trio

        return trio.BrokenResourceError(f"connection broken: {exc}")
    if lib == "anyio":
        import anyio

        return anyio.BrokenResourceError(f"connection broken: {exc}")
    if isinstance(exc, Exception):
        return exc
    return ConnectionResetError(f"connection lost: {exc}")


def _broken_types() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [ConnectionError, ssl.SSLError, IncompleteReadError]
    for name in ("trio", "anyio"):
        mod = sys.modules.get(name)
        if mod is not None:
            found += [mod.BrokenResourceError, mod.ClosedResourceError]
            if name == "anyio":
                found += [mod.EndOfStream, mod.IncompleteRead]
    return tuple(found)


def is_disconnect(exc: BaseException) -> bool:
    """True for the peer resetting, leaving or breaking TLS: routine for a server.

    An exception group counts when every exception in it does.
    """
    group = getattr(exc, "exceptions", None)   # an exception group (3.11+ or the backport)
    if isinstance(group, tuple) and group:
        return all(is_disconnect(e) for e in group)
    return isinstance(exc, _broken_types())


def describe(exc: BaseException) -> str:
    """One line for a routine disconnect: its type and message, or the first of a group's."""
    group = getattr(exc, "exceptions", None)
    if isinstance(group, tuple) and group:
        return describe(group[0]) + (f" (and {len(group) - 1} more)" if len(group) > 1 else "")
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def peer_of(getpeername: Any) -> Any:
    """The peer address from a ``getpeername`` callable, or None when the socket is gone."""
    try:
        return getpeername()
    except (OSError, AttributeError):
        return None
