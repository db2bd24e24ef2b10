"""Suite part: a Redis-protocol server on the documented Reader API under redis-benchmark.

Both servers are ``examples/resp_server/server.py`` (PING/SET/GET): ``membuf``
parses with ``transaction``/``peek_byte``/``read_line``/``read_bytes`` in a codec
run by ``frames(codec, batch=True)``; ``baseline`` is trio ``receive_some`` into
a bytearray with ``bytes.find``, what one writes by hand. Each round starts each
server in its own process, checks that it answers SET and GET correctly over a
real socket, then runs Debian's ``redis-benchmark -t set,get -n N -c 50 -P 16 -q``
against it (a check run only checks the replies); servers alternate, the first rotates, figures are medians of rounds.

Target: membuf at >= 1.0x the baseline's requests per second (goal 1.5x).
redis-benchmark comes from ``redis-tools`` (``make bench-deps``); without it the
part says so and is skipped.

    python -m membuf bench --only resp [--quick]
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

from _common import REPO, CheckError, Detail, Figure, Mode, Part, Progress, Row, fmt, rotations

SERVER = REPO / "examples" / "resp_server" / "server.py"
IMPLS = ["membuf", "baseline"]
FORMS = {"membuf": "membuf Reader codec, frames(batch)",
         "baseline": "trio receive_some + bytearray + bytes.find"}
DOC_SECTION = 'docs/benchmarks.md, section "RESP server under redis-benchmark"'


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _exchange(port: int, request: bytes, want: bytes) -> None:
    """Send ``request`` in two writes (split in its middle, a pause between them, so the
    server meets a partial command) and read until ``want`` arrived whole, or fail loudly."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request[: len(request) // 2])
        time.sleep(0.05)
        s.sendall(request[len(request) // 2 :])
        got = b""
        while len(got) < len(want):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    if got != want:
        raise CheckError(f"RESP server on port {port}: sent {request!r}, expected {want!r}, "
                         f"got {got!r}")


def check_replies(port: int) -> None:
    """SET then GET of a value with CRLF inside it, pipelined, split mid-command."""
    value = b"x\r\ny" * 7
    req = (b"*3\r\n$3\r\nSET\r\n$4\r\nkey1\r\n$%d\r\n%s\r\n*2\r\n$3\r\nGET\r\n$4\r\nkey1\r\n"
           b"*1\r\n$4\r\nPING\r\n" % (len(value), value))
    _exchange(port, req, b"+OK\r\n$%d\r\n%s\r\n+PONG\r\n" % (len(value), value))


@contextlib.contextmanager
def running(impl: str) -> Iterator[int]:
    """One server process, its replies checked; yields its port; stopped after."""
    port = _port()
    server = subprocess.Popen([sys.executable, str(SERVER), impl, "--port", str(port)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        server.stdout.readline()                       # "... RESP server on ..." once listening
        check_replies(port)
        yield port
        if server.poll() is not None:
            raise CheckError(f"RESP {impl} server exited during the run ({server.returncode})")
    finally:
        server.terminate()
        server.wait(10)


def one_round(impl: str, n: int) -> dict[str, float]:
    """redis-benchmark against a fresh, checked server: requests/s per command."""
    with running(impl) as port:
        out = subprocess.run(
            ["redis-benchmark", "-p", str(port), "-t", "set,get", "-n", str(n), "-c", "50",
             "-P", "16", "-q"], capture_output=True, text=True, timeout=300, check=True,
        ).stdout
    rates = {m[1]: float(m[2]) for m in re.finditer(r"(SET|GET): ([\d.]+) requests per second",
                                                    out)}
    if set(rates) != {"SET", "GET"}:
        raise CheckError(f"could not read redis-benchmark's output:\n{out}")
    return rates


def missing(mode: Mode) -> str:
    if not shutil.which("redis-benchmark"):
        return "redis-benchmark is not installed (make bench-deps: apt-get install redis-tools)"
    return ""


def measure(mode: Mode, prog: Progress) -> list[Part]:
    part = Part("RESP server")
    if mode.check:                     # no timing: both servers answer a pipelined, split request
        for impl in IMPLS:
            with running(impl):
                pass
        part.notes.append("RESP server: both forms answered SET/GET/PING correctly (check run, "
                          "not timed)")
        return [part]
    why = missing(mode)
    if why:
        part.notes.append(f"RESP server under redis-benchmark skipped: {why}; last figures in "
                          f"{DOC_SECTION}.")
        return [part]
    rounds, n = mode.pick(1, 2, 5), mode.pick(2_000, 50_000, 100_000)
    runs: dict[str, list[dict[str, float]]] = {i: [] for i in IMPLS}
    for r, order in enumerate(rotations(IMPLS, rounds)):
        prog.step(f"RESP: redis-benchmark -n {n} -P 16, round {r + 1}/{rounds}")
        for impl in order:
            runs[impl].append(one_round(impl, n))
            time.sleep(0.2)
        prog.advance()
    figs = {i: {cmd: Figure([x[cmd] for x in v]) for cmd in ("SET", "GET")}
            for i, v in runs.items()}
    part.details.append(Detail(
        f"RESP server (PING/SET/GET) under redis-benchmark -t set,get -n {n} -c 50 -P 16, "
        f"{rounds} rounds alternating: requests per second (median, min..max)",
        ["server", "SET req/s", "GET req/s"],
        [[FORMS[i], *(f"{fmt(f.median)} ({fmt(f.lo)}..{fmt(f.hi)})" for f in figs[i].values())]
         for i in IMPLS]))
    for cmd in ("SET", "GET"):
        part.rows.append(Row.of("RESP server", f"redis-benchmark {cmd}, -c 50 -P 16", "req/s",
                                FORMS["membuf"], figs["membuf"][cmd], FORMS["baseline"],
                                figs["baseline"][cmd], target=1.0,
                                target_text=">= 1.0x (goal 1.5x)",
                                note="a real client; each server in its own process, "
                                     "replies checked before the run"))
    part.notes.append(f"RESP server: method and the parser forms tried in {DOC_SECTION}.")
    part.data["resp"] = {i: {cmd: f.median for cmd, f in fs.items()} for i, fs in figs.items()}
    return [part]


def steps(mode: Mode) -> int:
    return 0 if mode.check or missing(mode) else mode.pick(1, 2, 5)

