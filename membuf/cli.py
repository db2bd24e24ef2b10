"""``python -m membuf <command>``: the command-line face of membuf.

Each command lives in the module that owns its concept and exposes
``main(argv) -> int``; this file only names them, and imports one lazily so
that ``python -m membuf probe`` never pays for trio or the benchmarks.
``--version`` prints the installed version.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("membuf.demo", "main", "loopback server and client exchanging LEB128 frames, live stats"),
    "bench": ("membuf.bench", "main", "every benchmark side by side, one table of ratios"),
    "probe": ("membuf.media.probe", "main", "summarise an .flv / .obu / .ivf file (like a small ffprobe)"),
    "serve-rtmp": ("membuf.media.servers", "rtmp_main", "RTMP ingest server (ffmpeg -f flv rtmp://...)"),
    "serve-av1": ("membuf.media.servers", "av1_main", "AV1 OBU ingest server over TCP (ffmpeg -f obu tcp://...)"),
}


def version() -> str:
    from . import __version__

    return f"membuf {__version__}"


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m membuf <command> [options]", "       python -m membuf --version",
             "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "python -m membuf <command> --help for a command's options"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        print(version())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    result = getattr(importlib.import_module(module), func)(rest)
    return int(result or 0)
