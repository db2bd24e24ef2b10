"""Build both extensions under AddressSanitizer + UBSan into build/asan/membuf.

`make test-asan` copies the Python package beside these builds and runs the
Python suite against them with gcc's libasan preloaded, so a C-API refcount or
bounds error in membuf._core (or the allocator) fails the run with a report.
Usage: python native/build_asan.py OUTDIR
"""

import pathlib
import subprocess
import sys
import sysconfig

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from build_ffi import make_builder  # noqa: E402

FLAGS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all",
         "-O1", "-g"]


def main(out: pathlib.Path) -> None:
    out = out.resolve()
    tmp = out.parent / (out.name + "-tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    builder = make_builder(absolute=True, extra=tuple(FLAGS))
    native = builder.compile(tmpdir=str(tmp))
    pkg = out / "membuf"
    target = pkg / pathlib.Path(native).name
    pathlib.Path(native).replace(target)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    sources = sorted(str(p) for p in (HERE / "core").glob("*.c"))
    include = sysconfig.get_paths()["include"]
    subprocess.run(
        ["gcc", "-std=c99", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", *FLAGS,
         f"-I{HERE}", f"-I{include}", "-o", str(pkg / f"_core{suffix}"), *sources],
        check=True,
    )


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
