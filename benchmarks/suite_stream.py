"""Suite part: trio loopback, 1 and 256 connections, and a frame-size sweep.

A separate sender process (this file with ``--send``) opens ``--conns``
connections and writes to each the same seeded stream of LEB128 frames
(``_common.frame_stream``: one block of whole frames, repeated), round-robin
one block at a time, as fast as it can. The receiving process runs one
contender on every connection at once and checks each connection's checksum
``(frames, payload bytes, sum of first payload bytes)`` against the
generator's. Contenders run round-robin, every contender once per round.

The receivers are ``bench_stream.CONTENDERS`` (raw ``recv_into`` into 64 KiB
and 256 KiB buffers, with a 1 MiB one added here as membuf receives up to 1 MiB at once; membuf
``frames(views, batch)`` and friends, trio ``receive_some`` + bytearray,
asyncio ``readexactly``, anyio ``receive_exactly`` and ``receive()`` + own
parsing), plus here the second asyncio form: a ``BufferedProtocol`` parsing
in place in one reused (grown when needed) bytearray, frames as memoryviews.

    python benchmarks/suite_stream.py [--quick|--check]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from _common import (
    CheckError,
    Checksum,
    Detail,
    Figure,
    Mode,
    Part,
    Progress,
    Row,
    fmt,
    frame_stream,
    rotations,
    verify,
)

HERE = Path(__file__).resolve().parent
KIND = "leb128"


def block_for(sizes: str, seed: int) -> tuple[bytes, Checksum]:
    biggest = max(int(x) for x in sizes.split("-")) if sizes != "burst" else 65536
    return frame_stream(KIND, sizes, max(256 << 10, 4 * biggest), seed)


def expected(sizes: str, per_conn: int, seed: int) -> tuple[int, Checksum]:
    """(bytes, checksum) one connection receives."""
    block, (f, p, s) = block_for(sizes, seed)
    r = max(1, -(-per_conn // len(block)))
    return len(block) * r, (f * r, p * r, s * r)


# -- the sender ------------------------------------------------------------------------------------


def send_main(args: argparse.Namespace) -> int:
    block, _ = block_for(args.sizes, args.seed)        # before connecting: not timed
    view = memoryview(block)
    reps = max(1, -(-args.bytes // len(block)))
    socks = []
    for _ in range(args.conns):
        s = socket.create_connection(("127.0.0.1", args.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    for _ in range(reps):
        for s in socks:
            s.sendall(view)
    if not args.hold:
        for s in socks:
            s.shutdown(socket.SHUT_WR)
    for s in socks:                    # wait for the receiver to close: never cut short by a reset
        while s.recv(4096):
            pass
        s.close()
    return 0


def start_sender(port: int, conns: int, sizes: str, per_conn: int, seed: int,
                 hold: bool = False) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--send",
                             "--port", str(port), "--conns", str(conns), "--sizes", sizes,
                             "--bytes", str(per_conn), "--seed", str(seed)]
                            + (["--hold"] if hold else []))


def raise_fd_limit(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


# -- the runners: (receiver, conns, sizes, per_conn, seed) -> (wall s, cpu s, results) -----------


Run = tuple[float, float, list[Any]]


def run_trio(receiver: Callable[..., Any], conns: int, sizes: str, per_conn: int, seed: int) -> Run:
    import trio

    async def main() -> Run:
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        listener.listen(conns + 16)
        proc = start_sender(listener.getsockname()[1], conns, sizes, per_conn, seed)
        streams = [trio.SocketStream((await listener.accept())[0]) for _ in range(conns)]
        listener.close()
        results: list[Any] = [None] * conns

        async def one(i: int) -> None:
            results[i] = await receiver(streams[i])

        t0, c0 = time.perf_counter(), time.thread_time()
        async with trio.open_nursery() as nursery:
            for i in range(conns):
                nursery.start_soon(one, i)
        dt, cpu = time.perf_counter() - t0, time.thread_time() - c0
        for s in streams:
            await s.aclose()
        await trio.to_thread.run_sync(proc.wait)
        return dt, cpu, results

    return trio.run(main)


async def _asyncio_accept(conns: int, sizes: str, per_conn: int,
                          seed: int) -> tuple[list[socket.socket], subprocess.Popen[bytes]]:
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(conns + 16)
    listener.setblocking(False)
    proc = start_sender(listener.getsockname()[1], conns, sizes, per_conn, seed)
    socks = [(await loop.sock_accept(listener))[0] for _ in range(conns)]
    listener.close()
    return socks, proc


def run_asyncio(receiver: Callable[..., Any], conns: int, sizes: str, per_conn: int,
                seed: int) -> Run:
    async def main() -> Run:
        loop = asyncio.get_running_loop()
        socks, proc = await _asyncio_accept(conns, sizes, per_conn, seed)
        pairs = [await asyncio.open_connection(sock=s, limit=1 << 20) for s in socks]
        t0, c0 = time.perf_counter(), time.thread_time()
        results = await asyncio.gather(*(receiver(r) for r, _ in pairs))
        dt, cpu = time.perf_counter() - t0, time.thread_time() - c0
        for _, w in pairs:
            w.close()
        await loop.run_in_executor(None, proc.wait)
        return dt, cpu, list(results)

    return asyncio.run(main())


def run_anyio(receiver: Callable[..., Any], conns: int, sizes: str, per_conn: int,
              seed: int) -> Run:
    import anyio

    async def main() -> Run:
        multi = await anyio.create_tcp_listener(local_host="127.0.0.1", backlog=conns + 16)
        listener = multi.listeners[0]
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        proc = start_sender(port, conns, sizes, per_conn, seed)
        streams = [await listener.accept() for _ in range(conns)]  # type: ignore[attr-defined]
        await multi.aclose()
        results: list[Any] = [None] * conns

        async def one(i: int) -> None:
            results[i] = await receiver(streams[i])

        t0, c0 = time.perf_counter(), time.thread_time()
        async with anyio.create_task_group() as tg:
            for i in range(conns):
                tg.start_soon(one, i)
        dt, cpu = time.perf_counter() - t0, time.thread_time() - c0
        for s in streams:
            await s.aclose()
        await anyio.to_thread.run_sync(proc.wait)
        return dt, cpu, results

    return anyio.run(main)


# -- asyncio BufferedProtocol: the second asyncio form ---------------------------------------------


class FrameProtocol(asyncio.BufferedProtocol):
    """Receive into one reused bytearray, parse LEB128 frames in place, frames as views."""

    def __init__(self, done: asyncio.Future[Checksum]) -> None:
        self.buf = bytearray(256 << 10)
        self.mv = memoryview(self.buf)
        self.have = 0
        self.frames = self.payload = self.first = 0
        self.done = done

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.have == len(self.buf):             # a frame longer than the buffer: grow it
            self.mv.release()
            self.buf.extend(bytes(len(self.buf)))
            self.mv = memoryview(self.buf)
        return self.mv[self.have :]

    def buffer_updated(self, nbytes: int) -> None:
        end = self.have + nbytes
        buf, mv = self.buf, self.mv
        pos = 0
        frames, payload, first = self.frames, self.payload, self.first
        while pos < end:
            b = buf[pos]
            p = pos + 1
            n = b & 0x7F
            shift = 7
            while b & 0x80:
                if p >= end:
                    break
                b = buf[p]
                p += 1
                n |= (b & 0x7F) << shift
                shift += 7
            else:
                if p + n <= end:
                    frame = mv[p : p + n]
                    frames += 1
                    payload += len(frame)
                    first += frame[0]
                    pos = p + n
                    continue
            break
        self.frames, self.payload, self.first = frames, payload, first
        if pos:
            mv[: end - pos] = mv[pos:end]
        self.have = end - pos

    def eof_received(self) -> bool:
        if self.have:
            self.done.set_exception(CheckError(f"BufferedProtocol: {self.have} bytes left over"))
        else:
            self.done.set_result((self.frames, self.payload, self.first))
        return False


def run_asyncio_protocol(receiver: Any, conns: int, sizes: str, per_conn: int, seed: int) -> Run:
    async def main() -> Run:
        loop = asyncio.get_running_loop()
        socks, proc = await _asyncio_accept(conns, sizes, per_conn, seed)
        dones: list[asyncio.Future[Checksum]] = [loop.create_future() for _ in socks]
        t0, c0 = time.perf_counter(), time.thread_time()
        transports = [(await loop.connect_accepted_socket(partial(FrameProtocol, d), s))[0]
                      for s, d in zip(socks, dones, strict=True)]
        results = await asyncio.gather(*dones)
        dt, cpu = time.perf_counter() - t0, time.thread_time() - c0
        for t in transports:
            t.close()
        await loop.run_in_executor(None, proc.wait)
        return dt, cpu, list(results)

    return asyncio.run(main())


# -- contenders ------------------------------------------------------------------------------------

Runner = Callable[[Any, int, str, int, int], Run]
PROTOCOL = "asyncio BufferedProtocol"
MEMBUF = "membuf views"
RAW = "raw recv_into 256K"
RAW_1M = "raw recv_into 1M"


async def trio_raw_1m(stream: Any) -> Any:
    """The limit with a buffer as large as membuf's largest receive (1 MiB): no parsing."""
    sock = stream.socket
    buf = bytearray(1 << 20)
    total = 0
    while True:
        n = await sock.recv_into(buf)
        if not n:
            return ("bytes", total)
        total += n


def contenders() -> dict[str, tuple[Runner, Any]]:
    """Name -> (runner, receiver): bench_stream's receivers on this file's runners."""
    import bench_stream

    runners: dict[str, Runner] = {"run_trio": run_trio, "run_asyncio": run_asyncio,
                                  "run_anyio": run_anyio}
    out: dict[str, tuple[Runner, Any]] = {}
    out[RAW_1M] = (run_trio, trio_raw_1m)
    for name, (runner, receiver) in bench_stream.CONTENDERS.items():
        out[name] = (runners[runner.__name__], receiver)
        if name == "asyncio readexactly":
            out[PROTOCOL] = (run_asyncio_protocol, None)
    return out


def is_raw(name: str) -> bool:
    return name.startswith("raw")


def is_membuf(name: str) -> bool:
    return name.startswith("membuf")


def check_results(name: str, results: list[Any], sizes: str, per_conn: int, seed: int) -> int:
    """Verify every connection's result; return the bytes received in all."""
    length, want = expected(sizes, per_conn, seed)
    for i, res in enumerate(results):
        if isinstance(res, tuple) and res and res[0] == "bytes":       # raw: byte count only
            verify(f"{name} conn {i}", (res[1],), (length,))
        else:
            verify(f"{name} conn {i}", res, want)
    return length * len(results)


Sample = tuple[float, float, float]    # frames/s, MB/s, receiver CPU ns per frame


def run_workload(label: str, names: list[str], conns: int, sizes: str, per_conn: int,
                 rounds: int, mode: Mode, prog: Progress, slow: dict[str, int] | None = None,
                 seed: int = 1) -> dict[str, tuple[Figure, Figure, Figure]]:
    """``{name: (frames/s Figure, MB/s Figure, CPU ns/frame Figure)}`` for one workload."""
    table = contenders()
    names = [n for n in names if n in table]
    slow = slow or {}
    samples: dict[str, list[Sample]] = {n: [] for n in names}
    if not mode.check and (conns == 1 or not mode.quick):       # warm-up: a short run each
        prog.step(f"loopback {label}: warm-up")
        for n in names:
            runner, receiver = table[n]
            pc = max(1, slow.get(n, per_conn) // 4)
            _, _, res = runner(receiver, conns, sizes, pc, seed)
            check_results(n, res, sizes, pc, seed)
    for r, order in enumerate(rotations(names, rounds)):
        prog.step(f"loopback {label}: round {r + 1}/{rounds}")
        for n in order:
            runner, receiver = table[n]
            pc = slow.get(n, per_conn)
            dt, cpu, res = runner(receiver, conns, sizes, pc, seed)
            total = check_results(n, res, sizes, pc, seed)
            frames = expected(sizes, pc, seed)[1][0] * conns
            samples[n].append((frames / dt / 1e6, total / dt / 1e6, cpu / frames * 1e9))
        prog.advance()
    return {n: (Figure([s[0] for s in v]), Figure([s[1] for s in v]), Figure([s[2] for s in v]))
            for n, v in samples.items()}


def detail(title: str, res: dict[str, Any]) -> Detail:
    rows = []
    for n, (fps, mbs, cpu) in res.items():
        rows.append([n, fmt(fps.median), f"{fmt(fps.lo)}..{fmt(fps.hi)}", fmt(mbs.median),
                     f"{fmt(mbs.lo)}..{fmt(mbs.hi)}", fmt(cpu.median)])
    return Detail(title, ["receiver", "M frames/s", "min..max", "MB/s", "min..max",
                          "receiver CPU ns/frame"], rows)


def paired(a: Figure, b: Figure) -> str:
    """The median of the per-round ratios a/b: both ran in the same round, under the same load."""
    r = Figure([x / y for x, y in zip(a.samples, b.samples, strict=True)])
    return f"per-round ratio median {r.median:.2f}x ({r.lo:.2f}..{r.hi:.2f})"


def best_baseline(res: dict[str, Any], idx: int) -> str:
    base = {n: v[idx].median for n, v in res.items() if not is_raw(n) and not is_membuf(n)}
    return max(base, key=lambda n: base[n])


BASELINES = ["trio bytearray", "asyncio readexactly", PROTOCOL, "anyio exactly", "anyio receive"]


def measure(mode: Mode, prog: Progress) -> list[Part]:
    raise_fd_limit(4096)
    part = Part("trio loopback")
    rounds = mode.pick(1, 3, 7)
    one = [RAW, RAW_1M, MEMBUF, "membuf views loop", *BASELINES]
    if not mode.quick:
        one[4:4] = ["raw recv_into 64K", "membuf Memory", "membuf read_exactly"]
    small = mode.pick(256 << 10, 8 << 20, 64 << 20)
    slow = {"anyio exactly": small // 8, "asyncio readexactly": small // 2}
    res_small = run_workload("1 conn, 16..300 B", one, 1, "16-300", small, rounds, mode, prog, slow)
    part.details.append(detail(f"trio loopback, 1 connection, LEB128 frames of 16..300 B "
                               f"({small >> 20 or small / (1 << 20):g} MiB; median of {rounds} "
                               "rounds, wall clock)", res_small))
    big = mode.pick(1 << 20, 96 << 20, 512 << 20)
    res_big = run_workload("1 conn, 64 KiB", one, 1, "65536", big, rounds, mode, prog)
    part.details.append(detail(f"trio loopback, 1 connection, 64 KiB frames ({big >> 20} MiB; "
                               f"median of {rounds} rounds, wall clock)", res_big))
    conns = mode.pick(32, 256, 256)
    per = mode.pick(8 << 10, 32 << 10, 512 << 10)
    many = [RAW, MEMBUF, "trio bytearray", "asyncio readexactly", PROTOCOL, "anyio receive"]
    res_many = run_workload(f"{conns} conns, 16..300 B", many, conns, "16-300", per, rounds, mode,
                            prog)
    part.details.append(detail(f"trio loopback, {conns} connections at once, 16..300 B frames, "
                               f"{per >> 10} KiB each (median of {rounds} rounds, wall clock)",
                               res_many))

    # rows of the main table
    for label, res, tgt in (("1 conn, 16..300 B", res_small, 1.5),
                            (f"{conns} conns, 16..300 B", res_many, None)):
        m, best = res[MEMBUF][0], best_baseline(res, 0)
        b = res[best][0]
        part.rows.append(Row("trio loopback", label, "M frames/s", "membuf frames(views, batch)",
                             m.median, m.lo, m.hi, best, b.median, b.lo, b.hi, target=tgt,
                             note=f"best baseline; {paired(m, b)}; receiver CPU ns/frame membuf "
                                  f"{fmt(res[MEMBUF][2].median)} vs {fmt(res[best][2].median)}"))
    cm, cbest = res_small[MEMBUF][2], min(
        (n for n in res_small if not is_raw(n) and not is_membuf(n)),
        key=lambda n: res_small[n][2].median)
    cb = res_small[cbest][2]
    part.rows.append(Row("trio loopback", "1 conn, 16..300 B, receiver CPU", "ns/frame",
                         "membuf frames(views, batch)", cm.median, cm.lo, cm.hi, cbest,
                         cb.median, cb.lo, cb.hi, higher_is_better=False,
                         note="receiver thread CPU time per frame; steadier than wall clock"))
    m, best = res_big[MEMBUF][1], best_baseline(res_big, 1)
    b = res_big[best][1]
    part.rows.append(Row("trio loopback", "1 conn, 64 KiB", "MB/s", "membuf frames(views, batch)",
                         m.median, m.lo, m.hi, best, b.median, b.lo, b.hi, note="best baseline"))
    raw_name = max((n for n in res_big if is_raw(n)), key=lambda n: res_big[n][1].median)
    raw = res_big[raw_name][1]
    part.rows.append(Row("trio loopback", "1 conn, 64 KiB", "MB/s", "membuf frames(views, batch)",
                         m.median, m.lo, m.hi, f"{raw_name} (limit)", raw.median, raw.lo, raw.hi,
                         target=0.8, target_text=">= 80% of raw", note=paired(m, raw)))
    # the same, per receiver CPU-second: steadier than wall clock when the machine is busy
    cpu_m = res_big[MEMBUF][2].scaled(lambda ns: 65536 / ns * 1e3)
    cpu_r = res_big[raw_name][2].scaled(lambda ns: 65536 / ns * 1e3)
    part.rows.append(Row("trio loopback", "1 conn, 64 KiB, per receiver CPU-second",
                         "MB/CPU-s", "membuf frames(views, batch)", cpu_m.median, cpu_m.lo,
                         cpu_m.hi, f"{raw_name} (limit)", cpu_r.median, cpu_r.lo, cpu_r.hi,
                         note="receiver thread CPU time; the sender's is not counted"))
    part.rows.append(Row("limit", "raw recv_into, 1 conn (64 KiB frames stream)", "MB/s",
                         f"trio {raw_name}", raw.median, raw.lo, raw.hi,
                         note="no parsing: the socket's limit here"))
    part.data["loopback"] = {
        "small": {n: [v[0].median, v[1].median] for n, v in res_small.items()},
        "big": {n: [v[0].median, v[1].median] for n, v in res_big.items()},
        "many": {n: [v[0].median, v[1].median] for n, v in res_many.items()},
    }

    if not mode.quick and not mode.check:             # the sweep, for the plot
        sweep_names = [RAW_1M, MEMBUF, "trio bytearray", "asyncio readexactly", PROTOCOL,
                       "anyio receive"]
        sweep: dict[str, dict[str, float]] = {}
        rows = []
        for size, nbytes in ((64, 48 << 20), (1024, 192 << 20), (16384, 512 << 20),
                             (262144, 512 << 20)):
            res = run_workload(f"1 conn, {size} B", sweep_names, 1, str(size), nbytes, 4, mode,
                               prog)
            sweep[str(size)] = {n: v[1].median for n, v in res.items()}
            rows.append([f"{size} B" if size < 1024 else f"{size >> 10} KiB"]
                        + [f"{fmt(res[n][1].median)}" for n in sweep_names])
        part.details.append(Detail("trio loopback, 1 connection, fixed frame sizes: payload "
                                   "MB/s (median of 4 rounds, wall clock)",
                                   ["frame size", *sweep_names], rows))
        part.data["loopback_sweep"] = sweep
    return [part]


def steps(mode: Mode) -> int:
    rounds = mode.pick(1, 3, 7)
    return 3 * rounds + (0 if mode.quick or mode.check else 4 * 4)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--send", action="store_true", help="be the sender (internal)")
    ap.add_argument("--port", type=int)
    ap.add_argument("--conns", type=int, default=1)
    ap.add_argument("--sizes", default="16-300")
    ap.add_argument("--bytes", type=int, default=1 << 20, help="per connection")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hold", action="store_true",
                    help="sender: keep the connections open (no EOF) until the receiver closes")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    if args.send:
        return send_main(args)
    mode = Mode(quick=args.quick, check=args.check)
    with Progress(steps(mode)) as prog:
        parts = measure(mode, prog)
    for d in parts[0].details:
        print(d.title)
        for cells in d.rows:
            print("   ", cells)
    for r in parts[0].rows:
        print(r.workload, r.membuf, fmt(r.value), r.unit, r.baseline, fmt(r.base_value),
              f"{r.ratio:.2f}x" if r.ratio else "-", r.status)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
