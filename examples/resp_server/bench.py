"""Both RESP servers under Debian's redis-benchmark, alternating rounds, one table.

    python examples/resp_server/bench.py [--rounds 3] [-n 100000]

Each round starts a server in its own process, runs
``redis-benchmark -t set,get -n N -c 50 -P 16 -q`` against it and keeps the
requests per second; the ratio is membuf over the baseline, per command,
median of the rounds. redis-benchmark comes from Debian's ``redis-tools``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_round(impl: str, n: int) -> dict[str, float]:
    port = free_port()
    server = subprocess.Popen([sys.executable, str(HERE / "server.py"), impl, "--port", str(port)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        server.stdout.readline()                       # "... RESP server on ..."
        out = subprocess.run(
            ["redis-benchmark", "-p", str(port), "-t", "set,get", "-n", str(n), "-c", "50",
             "-P", "16", "-q"], capture_output=True, text=True, timeout=300, check=True,
        ).stdout
    finally:
        server.terminate()
        server.wait(10)
    rates = {m[1]: float(m[2]) for m in re.finditer(r"(SET|GET): ([\d.]+) requests per second", out)}
    if set(rates) != {"SET", "GET"}:
        raise RuntimeError(f"could not read redis-benchmark's output:\n{out}")
    return rates


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-n", type=int, default=100_000)
    ns = ap.parse_args()
    if not shutil.which("redis-benchmark"):
        print("redis-benchmark not found: apt-get install redis-tools", file=sys.stderr)
        return 2
    runs: dict[str, list[dict[str, float]]] = {"membuf": [], "baseline": []}
    for _ in range(ns.rounds):
        for impl in runs:
            runs[impl].append(one_round(impl, ns.n))
            time.sleep(0.2)
    print(f"{'command':8} {'membuf req/s':>14} {'baseline req/s':>15} {'ratio':>7}")
    for cmd in ("SET", "GET"):
        m = statistics.median(r[cmd] for r in runs["membuf"])
        b = statistics.median(r[cmd] for r in runs["baseline"])
        print(f"{cmd:8} {m:14,.0f} {b:15,.0f} {m / b:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
