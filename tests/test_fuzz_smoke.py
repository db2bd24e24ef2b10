"""A short, deterministic run of every fuzz harness in fuzz/ (the long runs are ``make fuzz``).

Each harness's ``one_input`` is a pure function of its bytes that fails only
on a bug (an oracle's AssertionError, or an exception that is not a
MembufError): see fuzz/fuzzlib.py. Here it is driven two ways without
atheris, so ``make test`` needs nothing extra:

* ``run_random``: the harness's seed inputs, then seeded random mutations
  of them (fixed seed, fixed count: the same inputs every run);
* hypothesis: seeds edited by a list of splices, so a failure shrinks to a
  small edit of a valid stream.

The budgets are small by default (a few seconds in all). ``make fuzz`` runs
this file again with ``MEMBUF_FUZZ_RUNS`` and ``MEMBUF_FUZZ_EXAMPLES`` raised.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fuzz")
sys.path.insert(0, FUZZ_DIR)

import fuzz_codecs  # noqa: E402
import fuzz_media  # noqa: E402
import fuzz_reader  # noqa: E402
import fuzzlib  # noqa: E402

RUNS = int(os.environ.get("MEMBUF_FUZZ_RUNS", "1"))            # multiplier for run_random
EXAMPLES = int(os.environ.get("MEMBUF_FUZZ_EXAMPLES", "40"))    # hypothesis examples per harness

# harness -> inputs per run_random pass (well under a second each at the default)
HARNESSES: dict[str, tuple[ModuleType, int]] = {
    "reader": (fuzz_reader, 2000),
    "codecs": (fuzz_codecs, 250),
    "media": (fuzz_media, 1500),
}


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_seeds_pass(name: str) -> None:
    """Every seed is a valid input for its harness (they are the fuzzers' starting corpus)."""
    module, _ = HARNESSES[name]
    for data in module.seeds():
        module.one_input(data)


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_random_mutations(name: str) -> None:
    module, runs = HARNESSES[name]
    done = fuzzlib.run_random(module.one_input, module.seeds(), runs=runs * RUNS, seed=7)
    assert done == runs * RUNS


def _edited(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """A seed with a few splices (position, bytes to insert, bytes to cut), or raw bytes."""
    splice = st.tuples(st.integers(0, 9000), st.binary(max_size=12), st.integers(0, 16))

    def apply(seed: bytes, edits: list[tuple[int, bytes, int]]) -> bytes:
        for pos, blob, cut in edits:
            pos %= len(seed) + 1
            seed = seed[:pos] + blob + seed[pos + cut :]
        return seed

    return st.one_of(
        st.builds(apply, st.sampled_from(seeds), st.lists(splice, max_size=4)),
        st.binary(max_size=512),
    )


def _hypothesis_test(module: ModuleType) -> Callable[[], None]:
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(_edited(module.seeds()))
    def run(data: bytes) -> None:
        module.one_input(data)

    return run


test_hypothesis_reader = _hypothesis_test(fuzz_reader)
test_hypothesis_codecs = _hypothesis_test(fuzz_codecs)
test_hypothesis_media = _hypothesis_test(fuzz_media)


def test_input_decoder_is_forgiving() -> None:
    """Past the end of the input every number is 0 and every byte string empty."""
    inp = fuzzlib.Input(b"\x05")
    assert (inp.u8(), inp.u8(), inp.uint(4), inp.take(3), inp.below(10)) == (5, 0, 0, b"", 0)


def test_segments_rejoin() -> None:
    data = bytes(range(50))
    for i in range(64):
        segs = fuzzlib.segments(data, fuzzlib.Input(bytes([i, 7, i * 3, 200, 13, 1, 90, 2])))
        assert b"".join(bytes(s) for s in segs) == data
