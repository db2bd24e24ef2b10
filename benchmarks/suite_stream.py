"""Suite part: loopback under trio, asyncio, uvloop and anyio, TLS, and a size sweep.

For every run of a contender a separate sender process (``sender.py``; for TLS
``contenders.tls_send_main``) writes the seeded LEB128 stream to every
connection; the receiving process runs the contender (``contenders.STREAM``)
on all of them at once and checks each connection's checksum, or its byte
count for the raw ``recv_into`` limits. Contenders run round-robin, every
contender once per round, after a short untimed warm-up run each.

Targets (docs/benchmarks.md): asyncio and uvloop 16..300 B, 1 connection,
against a hand-written BufferedProtocol on the same loop (>= 1.5x); trio with
256 connections against the best of asyncio BufferedProtocol / anyio receive /
trio receive_some (>= 1.2x); TLS 64 KiB frames against asyncio's
``readexactly`` over TLS (>= 1.3x); 64 KiB frames under each library against
that library's raw receive into one buffer (>= 90%).

    python -m membuf bench --only stream [--quick | --check]
"""

from __future__ import annotations

from typing import Any

import contenders as c
from _common import Detail, Figure, Mode, Part, Progress, Row, fmt, rotations, verify
from sender import expected

MEMBUF = "membuf views"
MEMBUF_FORM = "membuf frames(views, batch)"
PROTOCOL = "asyncio BufferedProtocol"
BASELINES = ["trio receive_some", "trio recv_into", "asyncio readexactly", PROTOCOL,
             "anyio exactly", "anyio receive"]
Res = dict[str, tuple[Figure, Figure, Figure]]   # name -> (M frames/s, MB/s, CPU ns/frame)


def is_baseline(name: str) -> bool:
    return not name.startswith(("raw", "membuf"))


def run_once(name: str, conns: int, sizes: str, per_conn: int, seed: int) -> tuple[float, ...]:
    """One timed run, every connection checked: (M frames/s, MB/s, receiver CPU ns/frame)."""
    runner, receiver = c.STREAM[name]
    dt, cpu, tallies = runner(receiver, conns, sizes, per_conn, seed)
    length, want = expected(sizes, per_conn, seed)
    for i, t in enumerate(tallies):
        if name.startswith("raw"):
            verify(f"{name} conn {i}", (t.payload,), (length,))
        else:
            verify(f"{name} conn {i}", t.checksum(), want)
    frames = want[0] * conns
    return frames / dt / 1e6, length * conns / dt / 1e6, cpu / frames * 1e9


def run_workload(label: str, names: list[str], conns: int, sizes: str, per_conn: int,
                 rounds: int, mode: Mode, prog: Progress, slow: dict[str, int] | None = None,
                 seed: int = 1) -> Res:
    slow = slow or {}
    if not mode.check and (conns == 1 or not mode.quick):
        prog.step(f"loopback {label}: warm-up")
        for n in names:
            run_once(n, conns, sizes, max(1, slow.get(n, per_conn) // 4), seed)
    samples: dict[str, list[tuple[float, ...]]] = {n: [] for n in names}
    for r, order in enumerate(rotations(names, rounds)):
        prog.step(f"loopback {label}: round {r + 1}/{rounds}")
        for n in order:
            samples[n].append(run_once(n, conns, sizes, slow.get(n, per_conn), seed))
        prog.advance()
    return {n: (Figure([s[0] for s in v]), Figure([s[1] for s in v]), Figure([s[2] for s in v]))
            for n, v in samples.items()}


def detail(title: str, res: Res) -> Detail:
    return Detail(title, ["receiver", "M frames/s", "min..max", "MB/s", "min..max",
                          "receiver CPU ns/frame"],
                  [[n, fmt(f.median), f"{fmt(f.lo)}..{fmt(f.hi)}", fmt(b.median),
                    f"{fmt(b.lo)}..{fmt(b.hi)}", fmt(u.median)] for n, (f, b, u) in res.items()])


def paired(a: Figure, b: Figure) -> str:
    """The median of the per-round ratios a/b: both ran in the same round, under the same load."""
    r = Figure([x / y for x, y in zip(a.samples, b.samples, strict=True)])
    return f"per-round ratio median {r.median:.2f}x ({r.lo:.2f}..{r.hi:.2f})"


def best(res: Res, idx: int, pick: Any = max) -> str:
    return pick((n for n in res if is_baseline(n)), key=lambda n: res[n][idx].median)


ASYNC_SMALL = ["membuf asyncio views", PROTOCOL, "asyncio readexactly"]
UV_SMALL = ["membuf uvloop views", "uvloop BufferedProtocol"]
EACH_BIG = {"asyncio": ("membuf asyncio views", "raw asyncio recv_into 1M"),
            "uvloop": ("membuf uvloop views", "raw uvloop recv_into 1M"),
            "anyio": ("membuf anyio views", "raw anyio receive")}
TLS = ["membuf asyncio TLS views", "membuf trio TLS views", "membuf uvloop TLS views",
       "asyncio readexactly TLS", "asyncio BufferedProtocol TLS"]
MANY_BEST_OF = [PROTOCOL, "anyio receive", "trio receive_some"]


def available(names: list[str]) -> list[str]:
    """``names`` without the contenders whose library is not installed here."""
    out = []
    for n in names:
        if "uvloop" in n and not c.have("uvloop"):
            continue
        if "TLS" in n and not c.have_tls():
            continue
        out.append(n)
    return out


def measure(mode: Mode, prog: Progress) -> list[Part]:
    part = Part("trio loopback")
    rounds = mode.pick(1, 3, 7)

    def row(group: str, workload: str, unit: str, name: str, m: Figure, base: str, b: Figure,
            **kw: Any) -> None:
        part.rows.append(Row.of(group, workload, unit, name, m, base, b, **kw))

    # -- trio, 1 connection, 16..300 B ----------------------------------------------------------
    one = ["raw recv_into 256K", "raw recv_into 1M", MEMBUF, "membuf views loop", *BASELINES]
    if not mode.quick:
        one[4:4] = ["raw recv_into 64K", "membuf Memory", "membuf read_exactly"]
    small = mode.pick(256 << 10, 8 << 20, 64 << 20)
    slow = {"anyio exactly": small // 8, "asyncio readexactly": small // 2}
    res_small = run_workload("1 conn, 16..300 B", one, 1, "16-300", small, rounds, mode, prog, slow)
    part.details.append(detail(f"trio loopback, 1 connection, LEB128 frames of 16..300 B "
                               f"({small / (1 << 20):g} MiB; median of {rounds} rounds, wall "
                               "clock)", res_small))

    # -- asyncio and uvloop, 1 connection, 16..300 B ---------------------------------------------
    names = available(ASYNC_SMALL + UV_SMALL)
    res_async = run_workload("asyncio/uvloop 1 conn, 16..300 B", names, 1, "16-300", small,
                             rounds, mode, prog, slow)
    part.details.append(detail(f"asyncio and uvloop loopback, 1 connection, 16..300 B frames "
                               f"({small / (1 << 20):g} MiB; median of {rounds} rounds, wall "
                               "clock)", res_async))

    # -- 64 KiB frames: trio's contenders, and each library against its raw receive ------------
    big = mode.pick(1 << 20, 96 << 20, 512 << 20)
    each = [n for pair in EACH_BIG.values() for n in pair]
    res_big = run_workload("1 conn, 64 KiB", one + available(each), 1, "65536", big, rounds,
                           mode, prog)
    part.details.append(detail(f"loopback, 1 connection, 64 KiB frames ({big >> 20} MiB; "
                               f"median of {rounds} rounds, wall clock): trio's contenders, "
                               "then each library's membuf form and its raw receive", res_big))

    # -- TLS, 64 KiB frames ------------------------------------------------------------------
    tls_names = available(TLS)
    res_tls: Res = {}
    if tls_names:
        tls_bytes = mode.pick(1 << 20, 48 << 20, 256 << 20)
        res_tls = run_workload("TLS 1 conn, 64 KiB", tls_names, 1, "65536", tls_bytes, rounds,
                               mode, prog)
        part.details.append(detail(f"TLS loopback (the sender encrypts, the receiver decrypts), "
                                   f"1 connection, 64 KiB frames ({tls_bytes >> 20} MiB; median "
                                   f"of {rounds} rounds, wall clock)", res_tls))

    # -- trio, 256 connections ---------------------------------------------------------------------
    conns = mode.pick(32, 256, 256)
    per = mode.pick(16 << 10, 256 << 10, 512 << 10)
    many = ["raw recv_into 256K", MEMBUF, *(b for b in BASELINES if b != "anyio exactly")]
    res_many = run_workload(f"{conns} conns, 16..300 B", many, conns, "16-300", per, rounds,
                            mode, prog)
    part.details.append(detail(f"loopback, {conns} connections at once, 16..300 B frames, "
                               f"{per >> 10} KiB each (median of {rounds} rounds, wall clock)",
                               res_many))

    # -- the rows ------------------------------------------------------------------------------
    tr = "trio loopback"
    b = best(res_small, 0)
    row(tr, "1 conn, 16..300 B", "M frames/s", MEMBUF_FORM, res_small[MEMBUF][0], b,
        res_small[b][0], target=1.5,
        note=f"best baseline; {paired(res_small[MEMBUF][0], res_small[b][0])}; receiver CPU "
             f"ns/frame membuf {fmt(res_small[MEMBUF][2].median)} vs "
             f"{fmt(res_small[b][2].median)}")
    b = best(res_small, 2, min)
    row(tr, "1 conn, 16..300 B, receiver CPU", "ns/frame", MEMBUF_FORM, res_small[MEMBUF][2], b,
        res_small[b][2], higher_is_better=False,
        note="receiver thread CPU time per frame; steadier than wall clock")
    b = max(MANY_BEST_OF, key=lambda n: res_many[n][0].median)
    row(tr, f"{conns} conns, 16..300 B", "M frames/s", MEMBUF_FORM, res_many[MEMBUF][0], b,
        res_many[b][0], target=1.2,
        note=f"best of {' / '.join(MANY_BEST_OF)} (goal 2x); "
             f"{paired(res_many[MEMBUF][0], res_many[b][0])}; receiver CPU ns/frame membuf "
             f"{fmt(res_many[MEMBUF][2].median)} vs {fmt(res_many[b][2].median)}")
    for lib, mine, base in (("asyncio", "membuf asyncio views", PROTOCOL),
                            ("uvloop", "membuf uvloop views", "uvloop BufferedProtocol")):
        if mine in res_async:
            row(f"{lib} loopback", "1 conn, 16..300 B", "M frames/s",
                f"{mine} (frames(views, batch))", res_async[mine][0], base, res_async[base][0],
                target=1.5,
                note=f"hand-written BufferedProtocol parsing in place with memoryview slices "
                     f"(goal 2.5x); {paired(res_async[mine][0], res_async[base][0])}; receiver "
                     f"CPU ns/frame {fmt(res_async[mine][2].median)} vs "
                     f"{fmt(res_async[base][2].median)}")
    m, b = res_big[MEMBUF][1], best(res_big, 1)
    row(tr, "1 conn, 64 KiB", "MB/s", MEMBUF_FORM, m, b, res_big[b][1], note="best baseline")
    raw_name = max((n for n in res_big if n.startswith("raw recv_into")),
                   key=lambda n: res_big[n][1].median)
    raw = res_big[raw_name][1]
    row(tr, "1 conn, 64 KiB", "MB/s", MEMBUF_FORM, m, f"{raw_name} (limit)", raw, target=0.9,
        target_text=">= 90% of raw", note=f"goal 95%; {paired(m, raw)}")
    row(tr, "1 conn, 64 KiB, per receiver CPU-second", "MB/CPU-s", MEMBUF_FORM,
        res_big[MEMBUF][2].scaled(lambda ns: 65536 / ns * 1e3), f"{raw_name} (limit)",
        res_big[raw_name][2].scaled(lambda ns: 65536 / ns * 1e3),
        note="receiver thread CPU time; the sender's is not counted")
    for lib, (mine, limit) in EACH_BIG.items():
        if mine in res_big:
            row(f"{lib} loopback", "1 conn, 64 KiB", "MB/s", mine, res_big[mine][1],
                f"{limit} (limit)", res_big[limit][1], target=0.9, target_text=">= 90% of raw",
                note=f"goal 95%; {paired(res_big[mine][1], res_big[limit][1])}"
                     + ("; anyio has no recv_into: its limit is receive() into bytes, and "
                        "membuf copies each into native memory" if lib == "anyio" else ""))
    if res_tls:
        mine, base = "membuf asyncio TLS views", "asyncio readexactly TLS"
        row("TLS loopback", "1 conn, 64 KiB", "MB/s", mine, res_tls[mine][1], base,
            res_tls[base][1], target=1.3,
            note=f"goal 2x; {paired(res_tls[mine][1], res_tls[base][1])}; decrypted straight "
                 "into native memory (stats().copied == 0); the sender encrypts on the other "
                 "core, so wall clock is bounded by its speed")
        row("TLS loopback", "1 conn, 64 KiB, receiver CPU", "us/frame", mine,
            res_tls[mine][2].scaled(lambda ns: ns / 1e3), base,
            res_tls[base][2].scaled(lambda ns: ns / 1e3), higher_is_better=False,
            note="receiver thread CPU time per 64 KiB frame (decryption included)")
        for other in ("membuf trio TLS views", "membuf uvloop TLS views"):
            if other in res_tls:
                row("TLS loopback", "1 conn, 64 KiB", "MB/s", other, res_tls[other][1], base,
                    res_tls[base][1], note=paired(res_tls[other][1], res_tls[base][1]))
    part.rows.append(Row.of("limit", "raw recv_into, 1 conn (64 KiB frames stream)", "MB/s",
                            f"trio {raw_name}", raw, note="no parsing: the socket's limit here"))
    part.data["loopback"] = {k: {n: [v[0].median, v[1].median] for n, v in r.items()}
                             for k, r in (("small", res_small), ("big", res_big),
                                          ("many", res_many), ("async_small", res_async),
                                          ("tls", res_tls))}

    if not mode.quick and not mode.check:             # the sweep, for the plot
        names = ["raw recv_into 1M", MEMBUF, *(b for b in BASELINES if b != "anyio exactly")]
        sweep: dict[str, dict[str, float]] = {}
        for size, nbytes in ((64, 48 << 20), (1024, 192 << 20), (16384, 512 << 20),
                             (262144, 512 << 20)):
            res = run_workload(f"1 conn, {size} B", names, 1, str(size), nbytes, 4, mode, prog)
            sweep[str(size)] = {n: v[1].median for n, v in res.items()}
        part.details.append(Detail(
            "trio loopback, 1 connection, fixed frame sizes: payload MB/s (median of 4 rounds, "
            "wall clock)", ["frame size", *names],
            [[f"{s} B" if int(s) < 1024 else f"{int(s) >> 10} KiB"] + [fmt(r[n]) for n in names]
             for s, r in sweep.items()]))
        part.data["loopback_sweep"] = sweep
    return [part]


def steps(mode: Mode) -> int:
    return 5 * mode.pick(1, 3, 7) + (0 if mode.quick or mode.check else 4 * 4)
