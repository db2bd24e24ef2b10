"""Suite part: trio loopback, 1 and 256 connections, and a frame-size sweep (full runs).

For every run of a contender a separate sender process (``sender.py``) writes
the seeded LEB128 stream to every connection; the receiving process runs the
contender (``contenders.STREAM``) on all of them at once and checks each
connection's checksum, or its byte count for the raw ``recv_into`` limit.
Contenders run round-robin, every contender once per round, after a short
untimed warm-up run each.

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


def measure(mode: Mode, prog: Progress) -> list[Part]:
    part = Part("trio loopback")
    rounds = mode.pick(1, 3, 7)
    one = ["raw recv_into 256K", "raw recv_into 1M", MEMBUF, "membuf views loop", *BASELINES]
    if not mode.quick:
        one[4:4] = ["raw recv_into 64K", "membuf Memory", "membuf read_exactly"]
    small = mode.pick(256 << 10, 8 << 20, 64 << 20)
    slow = {"anyio exactly": small // 8, "asyncio readexactly": small // 2}
    res_small = run_workload("1 conn, 16..300 B", one, 1, "16-300", small, rounds, mode, prog, slow)
    part.details.append(detail(f"trio loopback, 1 connection, LEB128 frames of 16..300 B "
                               f"({small / (1 << 20):g} MiB; median of {rounds} rounds, wall "
                               "clock)", res_small))
    big = mode.pick(1 << 20, 96 << 20, 512 << 20)
    res_big = run_workload("1 conn, 64 KiB", one, 1, "65536", big, rounds, mode, prog)
    part.details.append(detail(f"trio loopback, 1 connection, 64 KiB frames ({big >> 20} MiB; "
                               f"median of {rounds} rounds, wall clock)", res_big))
    conns = mode.pick(32, 256, 256)
    per = mode.pick(16 << 10, 256 << 10, 512 << 10)
    many = ["raw recv_into 256K", MEMBUF, *(b for b in BASELINES if b != "anyio exactly")]
    res_many = run_workload(f"{conns} conns, 16..300 B", many, conns, "16-300", per, rounds,
                            mode, prog)
    part.details.append(detail(f"trio loopback, {conns} connections at once, 16..300 B frames, "
                               f"{per >> 10} KiB each (median of {rounds} rounds, wall clock)",
                               res_many))

    def row(workload: str, unit: str, m: Figure, base: str, b: Figure, **kw: Any) -> None:
        part.rows.append(Row.of("trio loopback", workload, unit, MEMBUF_FORM, m, base, b, **kw))

    for label, res, tgt in (("1 conn, 16..300 B", res_small, 1.5),
                            (f"{conns} conns, 16..300 B", res_many, None)):
        b = best(res, 0)
        row(label, "M frames/s", res[MEMBUF][0], b, res[b][0], target=tgt,
            note=f"best baseline; {paired(res[MEMBUF][0], res[b][0])}; receiver CPU ns/frame "
                 f"membuf {fmt(res[MEMBUF][2].median)} vs {fmt(res[b][2].median)}")
    b = best(res_small, 2, min)
    row("1 conn, 16..300 B, receiver CPU", "ns/frame", res_small[MEMBUF][2], b, res_small[b][2],
        higher_is_better=False, note="receiver thread CPU time per frame; steadier than wall clock")
    m, b = res_big[MEMBUF][1], best(res_big, 1)
    row("1 conn, 64 KiB", "MB/s", m, b, res_big[b][1], note="best baseline")
    raw_name = max((n for n in res_big if n.startswith("raw")), key=lambda n: res_big[n][1].median)
    raw = res_big[raw_name][1]
    row("1 conn, 64 KiB", "MB/s", m, f"{raw_name} (limit)", raw, target=0.8,
        target_text=">= 80% of raw", note=paired(m, raw))
    # the same per receiver CPU-second: steadier than wall clock when the machine is busy
    row("1 conn, 64 KiB, per receiver CPU-second", "MB/CPU-s",
        res_big[MEMBUF][2].scaled(lambda ns: 65536 / ns * 1e3), f"{raw_name} (limit)",
        res_big[raw_name][2].scaled(lambda ns: 65536 / ns * 1e3),
        note="receiver thread CPU time; the sender's is not counted")
    part.rows.append(Row.of("limit", "raw recv_into, 1 conn (64 KiB frames stream)", "MB/s",
                            f"trio {raw_name}", raw, note="no parsing: the socket's limit here"))
    part.data["loopback"] = {k: {n: [v[0].median, v[1].median] for n, v in r.items()}
                             for k, r in (("small", res_small), ("big", res_big),
                                          ("many", res_many))}

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
    return 3 * mode.pick(1, 3, 7) + (0 if mode.quick or mode.check else 4 * 4)
