"""The benchmark suite's harness works: every contender's checksum agrees on tiny sizes.

No timing assertions: ``--check`` runs every part on tiny sizes, one round,
verifies every checksum and the harness's self-checks (a wrong checksum and a
corrupted stream are caught, the generator is deterministic, the report and
plots render and replace only their part of docs/benchmarks.md), and writes
nothing. The in-memory contenders are also run here directly, on a good and a
corrupted stream of each framing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import membuf.bench

REPO = Path(__file__).resolve().parent.parent
needs_checkout = pytest.mark.skipif(membuf.bench.benchmarks_dir() is None,
                                    reason="not a source checkout")


@needs_checkout
def test_bench_quick_check_runs_and_checksums_agree() -> None:
    doc = REPO / "docs" / "benchmarks.md"
    before = doc.stat().st_mtime if doc.exists() else None
    proc = subprocess.run(
        [sys.executable, "-m", "membuf", "bench", "--quick", "--check", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=170,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"stdout:\n{out[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    m = re.search(r"^(\d+) checksums verified; 0 failures", out, re.M)
    assert m and int(m.group(1)) > 100, out[-2000:]
    assert "a wrong checksum and a corrupted stream are caught" in out
    assert "the report renders and replaces only its part" in out
    for group in ("allocator (Python)", "frame split", "delimiter", "reader calls",
                  "trio loopback", "memory", "limit"):
        assert re.search(rf"^\d+\s+{re.escape(group)}\s", out, re.M), f"no {group!r} row"
    floor = re.search(r"^(\d+)\s+limit\s+one memoryview made in C", out, re.M)
    split = re.search(r"^(\d+)\s+frame split\s", out, re.M)
    assert floor and split and int(floor.group(1)) + 1 == int(split.group(1)), \
        "the memoryview floor must stand just before the frame split rows"
    assert "MISSED" not in out and " met " not in out      # a check run judges no target
    after = doc.stat().st_mtime if doc.exists() else None
    assert before == after, "a check run must not rewrite docs/benchmarks.md"


@pytest.fixture
def suite(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The suite's modules, imported from benchmarks/ (and forgotten afterwards)."""
    monkeypatch.syspath_prepend(str(membuf.bench.benchmarks_dir()))
    names = ("_common", "sender", "contenders")
    mods = {n: __import__(n) for n in names}
    yield mods
    for n in names:
        sys.modules.pop(n, None)


@needs_checkout
@pytest.mark.parametrize("kind", ["leb128", "be32", "crlf"])
def test_every_in_memory_contender_agrees_and_a_corruption_is_caught(
        suite: dict[str, Any], kind: str) -> None:
    common, contenders = suite["_common"], suite["contenders"]
    data, want = common.frame_stream(kind, "16-300", 20_000, seed=3)
    bad = bytearray(data)
    bad[0] ^= 0x04            # the first prefix (or the first byte of the first line)
    for name, case in contenders.split_cases(kind).items():
        assert case(common.chunked(data, 999)) == want, name       # frames across chunks
        try:
            got = case(common.chunked(bytes(bad), 999))
        except Exception:     # noqa: BLE001 - raising is one way to catch it
            continue
        assert got != want, f"{name} did not notice a corrupted stream"


def test_bench_outside_a_checkout_says_so(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(membuf.bench, "benchmarks_dir", lambda: None)
    assert membuf.bench.main([]) == 2
    assert "source checkout" in capsys.readouterr().err
