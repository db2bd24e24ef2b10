"""Test-suite set-up: make the helper modules next to the tests importable on purpose.

Plain modules in ``tests/`` serve the test modules:

* ``splitting``: the every-split helper (``from splitting import SPLITS, ...``),
  imported by name wherever a test runs over every split of its input;
* ``media_fixtures``: ffmpeg/ffprobe helpers (imported by name) and the
  session fixtures that make media files once (``media_dir``, ``flv_file``,
  ``obu_file``, ``ivf_file``);
* ``unraisable``: ``collected()``, what finalizers raised while a test dropped
  its objects.

``tests/`` is not a package, so those imports need ``tests/`` on ``sys.path``.
pytest's default import mode (``prepend``) happens to put it there while it
imports a test module; this file does it itself, before any test module is
imported, so the imports do not depend on that side effect: they work from any
working directory, for any subset of the tests, and under
``--import-mode=importlib`` too.

``media_fixtures`` is then registered as a plugin, so its fixtures reach
every test module without each one importing (and re-exporting) the fixture
functions. This conftest is the top-level one of the suite (``testpaths =
["tests"]`` in pyproject.toml), which is where pytest accepts ``pytest_plugins``.
"""

from __future__ import annotations

import sys
from pathlib import Path

TESTS_DIR = str(Path(__file__).resolve().parent)
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

pytest_plugins = ["media_fixtures"]
