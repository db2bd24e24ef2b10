"""``python -m membuf bench``: run the benchmark suite of a membuf checkout.

The benchmarks are a checkout-only tool (they need the C harness, the
baselines' packages and a separate sender process), so this module only finds
the repository's ``benchmarks/`` directory next to the package and hands over
to ``benchmarks/suite_main.py``. Options: ``python -m membuf bench --help``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

ENTRY = "suite_main"


def benchmarks_dir() -> Path | None:
    """The checkout's ``benchmarks/`` directory (beside the package), or None."""
    d = Path(__file__).resolve().parent.parent / "benchmarks"
    return d if (d / f"{ENTRY}.py").is_file() else None


def main(argv: list[str] | None = None) -> int:
    d = benchmarks_dir()
    if d is None:
        print("membuf bench: no benchmarks/ directory next to the membuf package.\n"
              "The benchmark suite runs from a source checkout: clone the repository, then\n"
              "  make bench            (or: pip install -e '.[bench]' && python -m membuf bench)",
              file=sys.stderr)
        return 2
    if str(d) not in sys.path:
        sys.path.insert(0, str(d))
    suite = importlib.import_module(ENTRY)
    return int(suite.main(sys.argv[1:] if argv is None else argv) or 0)
