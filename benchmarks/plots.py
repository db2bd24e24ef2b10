"""PNG plots for docs/benchmarks.md (matplotlib, from the ``bench`` extra).

* ``loopback_throughput.png`` (the headline, full runs): trio loopback payload
  MB/s against frame size, one line per receiver, raw ``recv_into`` dashed;
* ``split_throughput.png``: in-memory frame splitting, payload MB/s against
  frame size, LEB128 and be32 side by side;
* ``rss_burst.png``: RSS over a burst on 256 connections, one line per receiver.

Every function returns the path it wrote, or None when matplotlib is missing
or there is nothing to draw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HEADLINE = "loopback_throughput.png"
HEADLINE_FALLBACK = "split_throughput.png"


def _plt() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(plt: Any, fig: Any, out: Path) -> Path:
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _style(name: str) -> dict[str, Any]:
    if name.startswith("raw"):
        return {"color": "black", "linestyle": "--", "marker": ""}
    if name.startswith("membuf"):
        return {"linewidth": 2.5, "marker": "o"}
    return {"linewidth": 1.2, "marker": "."}


def _size_axis(ax: Any, sizes: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([f"{s} B" if s < 1024 else f"{s >> 10} KiB" for s in sizes])
    ax.set_xlabel("frame size")
    ax.grid(True, which="both", alpha=0.3)


def plot_loopback(sweep: dict[str, dict[str, float]], out: Path, subtitle: str) -> Path | None:
    plt = _plt()
    if plt is None or not sweep:
        return None
    sizes = sorted(int(s) for s in sweep)
    names = list(sweep[str(sizes[0])])
    fig, ax = plt.subplots(figsize=(8, 5))
    for n in names:
        ax.plot(sizes, [sweep[str(s)][n] for s in sizes], label=n, **_style(n))
    _size_axis(ax, sizes)
    ax.set_ylabel("payload MB/s (median)")
    ax.set_title(f"trio loopback, 1 connection, LEB128 frames\n{subtitle}", fontsize=10)
    ax.legend(fontsize=8)
    return _save(plt, fig, out)


def plot_split(split: dict[str, dict[str, dict[str, float]]], out: Path, subtitle: str) -> Path | None:
    plt = _plt()
    if plt is None or not split:
        return None
    kinds = list(split)
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4.8), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        specs = [s for s in split[kind] if "-" not in s]
        sizes = sorted(int(s) for s in specs)
        if not sizes:
            continue
        names = list(split[kind][str(sizes[0])])
        for n in names:
            ax.plot(sizes, [split[kind][str(s)][n] for s in sizes], label=n, **_style(n))
        _size_axis(ax, sizes)
        ax.set_ylabel("payload MB/s (median, CPU time)")
        ax.set_title(f"frame split in memory, {kind} prefix", fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle(subtitle, fontsize=9)
    return _save(plt, fig, out)


def plot_rss(burst: dict[str, dict[str, Any]], out: Path, subtitle: str) -> Path | None:
    plt = _plt()
    if plt is None or not burst:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for name, r in burst.items():
        t0 = r["marks"]["before"]
        pts = [(t - t0, v / (1 << 20)) for t, v in r["timeline"] if t >= t0 - 0.05]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, **{
            k: v for k, v in _style(name).items() if k != "marker"})
        for mark in ("drained", "idle", "closed"):
            if name.startswith("membuf") and mark in r["marks"]:
                ax.axvline(r["marks"][mark] - t0, color="grey", alpha=0.4, linewidth=0.8)
                ax.text(r["marks"][mark] - t0, ax.get_ylim()[1], f" {mark}", fontsize=7,
                        va="top", color="grey")
    starts = [r["before"] / (1 << 20) for r in burst.values()]
    if starts:
        ax.axhline(1.1 * max(starts), color="red", alpha=0.5, linewidth=0.8, linestyle=":")
        ax.text(0, 1.1 * max(starts), "start + 10%", fontsize=7, color="red", va="bottom")
    ax.set_xlabel("seconds since the burst started")
    ax.set_ylabel("RSS MiB")
    ax.set_title(f"RSS over a burst\n{subtitle}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, out)


def draw_all(data: dict[str, Any], img: Path, subtitle: str) -> list[Path]:
    """Every plot the data allows, into ``img``; the paths written."""
    img.mkdir(parents=True, exist_ok=True)
    out = [
        plot_loopback(data.get("loopback_sweep", {}), img / HEADLINE, subtitle),
        plot_split(data.get("split", {}), img / "split_throughput.png", subtitle),
        plot_rss(data.get("burst", {}), img / "rss_burst.png", subtitle),
    ]
    return [p for p in out if p is not None]
