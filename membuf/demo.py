"""``python -m membuf demo``: what membuf does, in a few seconds.

Part 1 walks the allocator: malloc, partial free, growth past an arena and a
dedicated arena, with ``stats()`` printed as a table after each step.
"""

from __future__ import annotations

import argparse

from .allocator import STAT_FIELDS, Allocator, AllocatorStats


def stats_table(rows: list[tuple[str, AllocatorStats]]) -> str:
    """Render stats snapshots as a plain-text table, one column per snapshot."""
    width = max(12, *(len(label) for label, _ in rows))
    head = "".join(f"{label:>{width + 2}}" for label, _ in rows)
    lines = [f"{'':<13}{head}"]
    for name in STAT_FIELDS:
        values = "".join(f"{getattr(s, name):>{width + 2},}" for _, s in rows)
        lines.append(f"{name:<13}{values}")
    return "\n".join(lines)


def allocator_walkthrough(out: list[str] | None = None) -> Allocator:
    """Allocate, partially free, grow past an arena; print stats after each step."""
    a = Allocator(arena_size=64 << 10, max_arena_size=256 << 10)
    snaps: list[tuple[str, AllocatorStats]] = [("fresh", a.stats())]

    mv = a.malloc(10_000)
    mv[:] = b"m" * len(mv)
    snaps.append(("malloc 10k", a.stats()))

    a.free(mv[2_000:8_000])                    # a hole in the middle
    head = a.free_rest(mv[:2_000], 100)        # keep 100 bytes of the prefix
    snaps.append(("partial free", a.stats()))

    grown = [a.malloc(60_000) for _ in range(3)]   # past the first arena: it doubles
    big = a.malloc(1 << 20)                    # above max_arena_size: dedicated arena
    snaps.append(("grow", a.stats()))

    for block in (*grown, big, head, mv[8_000:]):
        a.free(block)
    snaps.append(("all freed", a.stats()))
    a.trim()
    snaps.append(("trim", a.stats()))

    text = stats_table(snaps)
    if out is None:
        print("membuf allocator: malloc, partial free, growth, trim\n")
        print(text)
    else:
        out.append(text)
    return a


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m membuf demo", description=__doc__)
    parser.parse_args(argv)
    a = allocator_walkthrough()
    s = a.stats()
    print(f"\nevery byte freed: in_use={s.in_use}, reserved={s.reserved}")
    return 0 if s.in_use == 0 else 1
