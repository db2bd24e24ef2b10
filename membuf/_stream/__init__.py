"""The stream layer behind :mod:`membuf.stream`, one file per concern.

* ``_options``: :class:`StreamOptions`, the one options object every constructor threads;
* ``_engine``: the receive engine, with no event loop in it (chunks, limits, idle);
* ``_receive``: :class:`StreamReader` and :class:`Frames`, the async reads over an
  engine and one source adapter;
* ``_trio``, ``_asyncio``, ``_anyio``: the adapters (receive, send, serve) per library;
* ``_tls``: TLS for trio over ``ssl.SSLObject``, decrypting into the engine's chunks;
* ``_send``: gather sends and ``send_memory``;
* ``_connection``: :class:`Connection`;
* ``_tcp``: ``open_tcp``, ``serve_tcp``, ``start_server`` and the handler runner;
* ``_errors``: socket errors in each library's words, routine disconnects.

Public names are re-exported by ``membuf.stream`` and ``membuf``; docs/stream.md
describes the behaviour and docs/design.md §6 the contract.
"""
