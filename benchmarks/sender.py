"""The one sender of the socket benchmarks: a separate process writing seeded LEB128 frames.

It opens ``--conns`` loopback connections and writes to each the same seeded
block of whole frames (``_common.frame_stream``), repeated up to ``--bytes`` per
connection, round-robin, as fast as ``sendall`` goes (its time is spent in the
kernel, not in Python). ``--hold`` keeps the connections open after the last
byte (idle connections, for the memory part); it always lets the receiver close
first, so no data is cut short by a reset. ``--tls-ca`` wraps each connection in
TLS (the receiver is the TLS server; the end is a close_notify). Receivers call
:func:`accept_sender` and check against :func:`expected`, computed from the
generator.
"""

from __future__ import annotations

import argparse
import resource
import socket
import ssl
import subprocess
import sys
from pathlib import Path

from _common import Checksum, frame_stream

KIND = "leb128"


def raise_fd_limit(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


def block_for(sizes: str, per_conn: int, seed: int) -> tuple[bytes, Checksum]:
    """The block the sender repeats: big enough for ``sendall`` to dominate, no bigger
    than one connection's share."""
    biggest = 65536 if sizes == "burst" else max(int(x) for x in sizes.split("-"))
    return frame_stream(KIND, sizes, min(per_conn, max(256 << 10, 4 * biggest)), seed)


def expected(sizes: str, per_conn: int, seed: int) -> tuple[int, Checksum]:
    """(bytes, checksum) one connection receives."""
    block, (f, p, s) = block_for(sizes, per_conn, seed)
    r = max(1, -(-per_conn // len(block)))
    return len(block) * r, (f * r, p * r, s * r)


def accept_sender(conns: int, sizes: str, per_conn: int, seed: int, hold: bool = False,
                  tls_ca: str | None = None) -> tuple[list[socket.socket], subprocess.Popen[bytes]]:
    """Start a sender process and accept its ``conns`` connections (blocking sockets);
    ``tls_ca``: the sender speaks TLS, trusting this CA file (the caller is the server)."""
    raise_fd_limit(2 * conns + 64)
    with socket.create_server(("127.0.0.1", 0), backlog=conns + 16) as listener:
        listener.settimeout(120)
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--port",
             str(listener.getsockname()[1]), "--conns", str(conns), "--sizes", sizes, "--bytes",
             str(per_conn), "--seed", str(seed)] + (["--hold"] if hold else [])
            + (["--tls-ca", tls_ca] if tls_ca else []))
        try:
            return [listener.accept()[0] for _ in range(conns)], proc
        except BaseException:
            proc.kill()
            raise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=1)
    ap.add_argument("--sizes", default="16-300", help='"256", "16-300" or "burst"')
    ap.add_argument("--bytes", type=int, default=1 << 20, help="per connection")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hold", action="store_true", help="no EOF: wait for the receiver to close")
    ap.add_argument("--tls-ca", help="speak TLS to the receiver, trusting this CA file")
    args = ap.parse_args(argv)
    raise_fd_limit(args.conns + 64)
    block, _ = block_for(args.sizes, args.bytes, args.seed)        # before connecting: not timed
    view = memoryview(block)
    socks = [socket.create_connection(("127.0.0.1", args.port)) for _ in range(args.conns)]
    for s in socks:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if args.tls_ca:
        ctx = ssl.create_default_context(cafile=args.tls_ca)
        for s in socks:
            s.settimeout(120)
        socks = [ctx.wrap_socket(s, server_hostname="localhost") for s in socks]
    for _ in range(max(1, -(-args.bytes // len(block)))):
        for s in socks:
            s.sendall(view)
    if args.tls_ca:
        for s in socks:
            try:
                s.unwrap().close()            # close_notify: the end of the stream
            except (OSError, ssl.SSLError):
                s.close()
        return 0
    for s in socks:
        if not args.hold:
            s.shutdown(socket.SHUT_WR)
    for s in socks:                   # until the receiver closes
        while s.recv(4096):
            pass
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
