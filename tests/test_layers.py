"""The layering rule (native -> allocator -> memory/reader -> codecs -> stream -> cli)
and the public namespace, enforced by reading each module's imports."""

from __future__ import annotations

import ast
import pathlib

import membuf

PACKAGE = pathlib.Path(membuf.__file__).resolve().parent

# A module may import only modules of a lower rank, or of its own layer.
RANK = {
    "errors": 0,
    "_native": 0,
    "core": 0,        # membuf._core, the compiled core (C; it imports nothing of membuf)
    "debug": 1,       # the allocator's debug mode: poison, quarantine, tracebacks
    "allocator": 1,
    "memory": 2,      # memory and reader are one layer: Memory.reader() returns a Reader
    "reader": 2,
    "writer": 3,      # encodes into Memory; codecs and media encode with it
    "codecs": 4,
    "stream": 5,
    "media": 6,
    "demo": 7,
    "bench": 7,
    "testing": 7,
    "cli": 8,
    "__main__": 9,
    "__init__": 9,
}


def layer_of(module: str) -> str:
    """'membuf.media.rtmp' -> 'media'; 'membuf._connection' -> the module it serves."""
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else "__init__"
    return name.lstrip("_") if name not in RANK and name.lstrip("_") in RANK else name


def imports_of(path: pathlib.Path) -> set[str]:
    module = "membuf." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("membuf")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:
                    found |= {f"{target}.{a.name}" for a in node.names}
                else:
                    found.add(target)
            elif node.module and node.module.startswith("membuf"):
                found.add(node.module)
    return found


def test_lower_layers_never_import_higher_ones() -> None:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = layer_of("membuf." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        if me not in RANK:
            problems.append(f"{path.name}: module not placed in a layer (add it to RANK)")
            continue
        for target in imports_of(path):
            other = layer_of(target)
            if other in RANK and RANK[other] > RANK[me]:
                problems.append(f"{path.relative_to(PACKAGE)} ({me}) imports {target} ({other})")
    assert problems == []


def test_every_public_name_is_exported_once_and_exists() -> None:
    assert len(membuf.__all__) == len(set(membuf.__all__))
    for name in membuf.__all__:
        assert getattr(membuf, name) is not None
