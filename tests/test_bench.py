"""The benchmark suite's harness works: every contender's checksum agrees on tiny sizes.

No timing assertions: ``--check`` runs every part on tiny sizes, one round,
verifies every checksum and the harness's self-checks (a wrong checksum and a
corrupted stream are caught, the generator agrees with a reference decoder,
the report and plots render), and writes nothing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import membuf.bench

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(membuf.bench.benchmarks_dir() is None, reason="not a source checkout")
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
    assert "the report renders" in out
    for group in ("allocator (Python)", "frame split", "delimiter", "reader calls",
                  "trio loopback", "memory", "limit"):
        assert re.search(rf"^\d+\s+{re.escape(group)}\s", out, re.M), f"no {group!r} row"
    assert "MISSED" not in out and " met " not in out      # a check run judges no target
    after = doc.stat().st_mtime if doc.exists() else None
    assert before == after, "a check run must not rewrite docs/benchmarks.md"


def test_bench_outside_a_checkout_says_so(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(membuf.bench, "benchmarks_dir", lambda: None)
    assert membuf.bench.main([]) == 2
    assert "source checkout" in capsys.readouterr().err
