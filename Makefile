# membuf: `make demo` and `make test` work on a fresh machine with python3, gcc and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.membuf-installed
NATIVE_SRC := $(wildcard native/*.c)
NATIVE := $(NATIVE_SRC) $(wildcard native/*.h native/*.cdef native/core/*.c native/core/*.h) native/build_ffi.py
SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
CFLAGS_TEST := -std=c99 -g -O1 -Wall -Wextra -Werror -DMB_DEBUG -Inative

.PHONY: all install demo test test-c test-core-warnings test-py test-asan lint bench bench-quick bench-deps fuzz soak clean

all: install

install: $(STAMP)

$(STAMP): pyproject.toml setup.py $(NATIVE)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(STAMP)
	$(PY) -m membuf demo

test: $(STAMP) test-c lint test-py test-micro test-asan

test-py: $(STAMP)
	$(PY) -m pytest -q
	@# the Reader / codec / media-parser suite again on the pure-Python twin (docs/design.md §10)
	MEMBUF_PURE_PYTHON=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_reader.py \
		tests/test_codecs.py tests/test_misuse.py tests/test_differential.py tests/test_media_parsers.py \
		tests/test_writer.py tests/test_memory.py

LINT_DIRS := $(wildcard membuf tests benchmarks examples fuzz)

lint: $(STAMP)
	$(PY) -m ruff check $(LINT_DIRS)
	$(PY) -m mypy

# C tests: built and run under AddressSanitizer + UndefinedBehaviorSanitizer.
C_TESTS := $(patsubst %.c,%,$(wildcard native/tests/test_*.c))

test-c: $(C_TESTS) test-core-warnings
	set -e; for t in $(C_TESTS); do ./$$t; done

# membuf._core's C sources (CPython C-API) must build -Wall -Wextra clean.
test-core-warnings: $(STAMP)
	$(CC) -std=c99 -Wall -Wextra -Werror -fsyntax-only -Inative \
		-I"$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" native/core/*.c

# The Python suite once more against both extensions built under ASan + UBSan
# (native/build_asan.py), gcc's runtimes preloaded into the unsanitized interpreter.
# Leak detection is off: CPython keeps interned objects until exit by design.
ASAN_DIR := build/asan
ASAN_RUNTIME = $(shell $(CC) -print-file-name=libasan.so) $(shell $(CC) -print-file-name=libubsan.so)

$(ASAN_DIR)/.built: $(NATIVE) native/build_asan.py $(wildcard membuf/*.py membuf/media/*.py)
	rm -rf $(ASAN_DIR) $(ASAN_DIR)-tmp && mkdir -p $(ASAN_DIR)
	cp -r membuf $(ASAN_DIR)/ && rm -f $(ASAN_DIR)/membuf/*.so
	$(PY) native/build_asan.py $(ASAN_DIR)
	touch $@

test-asan: $(STAMP) $(ASAN_DIR)/.built
	cd $(ASAN_DIR) && PYTHONPATH=$(CURDIR)/$(ASAN_DIR) LD_PRELOAD="$(ASAN_RUNTIME)" \
		ASAN_OPTIONS=detect_leaks=0 $(CURDIR)/$(PY) -m pytest -q -p no:cacheprovider \
		--rootdir=$(CURDIR) -c $(CURDIR)/pyproject.toml $(CURDIR)/tests \
		-k "not demo" -m "not slow"

native/tests/test_%: native/tests/test_%.c $(NATIVE)
	$(CC) $(CFLAGS_TEST) $(SAN) -o $@ $< $(NATIVE_SRC) -lpthread

benchmarks/alloc_bench: benchmarks/alloc_bench.c $(NATIVE)
	$(CC) -std=c99 -O2 -Wall -Wextra -Inative -o $@ benchmarks/alloc_bench.c $(NATIVE_SRC) -lpthread -ldl

# The benchmark suite: rich, matplotlib and leb128 (the `bench` extra); best effort: mimalloc and
# jemalloc (Debian) for the allocator comparison, redis-tools, pyrtmp for RTMP ingest, nginx +
# libnginx-mod-rtmp (Debian) for RTMP relay. Bench only: `make test` needs none of them.
# `bench` rewrites docs/benchmarks.md.
bench-deps: $(STAMP)
	@$(PY) -c "import rich, matplotlib, leb128" 2>/dev/null || $(PY) -m pip install -q -e '.[bench]'
	-@if command -v apt-get >/dev/null 2>&1 && ! ldconfig -p | grep -q libjemalloc.so.2; then \
		(export DEBIAN_FRONTEND=noninteractive; apt-get update -q && apt-get install -y -q libmimalloc2.0 libjemalloc2) >/dev/null 2>&1 \
		|| echo "mimalloc/jemalloc not installed: the allocator table compares with glibc only"; fi
	-@if command -v apt-get >/dev/null 2>&1 && ! command -v redis-benchmark >/dev/null 2>&1; then \
		(export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q redis-tools || \
		 (apt-get update -q && apt-get install -y -q redis-tools)) >/dev/null 2>&1 \
		|| echo "redis-benchmark not installed: the RESP row is skipped"; fi
	-@$(PY) -c "import pyrtmp" 2>/dev/null || $(PY) -m pip install -q pyrtmp \
		|| echo "pyrtmp not installed: the RTMP ingest rows are skipped"
	-@if command -v apt-get >/dev/null 2>&1 && ! [ -e /usr/lib/nginx/modules/ngx_rtmp_module.so ]; then \
		(export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q nginx libnginx-mod-rtmp || \
		 (apt-get update -q && apt-get install -y -q nginx libnginx-mod-rtmp)) >/dev/null 2>&1 \
		|| echo "nginx-rtmp not installed: the RTMP relay rows are skipped"; fi

bench: bench-deps benchmarks/alloc_bench
	$(PY) -m membuf bench

bench-quick: bench-deps benchmarks/alloc_bench
	$(PY) -m membuf bench --quick

clean:
	rm -rf build *.egg-info membuf/_native*.so membuf/_core*.so $(C_TESTS) benchmarks/alloc_bench

# ---- fuzzing (see fuzz/README.md) -------------------------------------------
# make fuzz [FUZZ_SECONDS=60]: each atheris harness and the libFuzzer allocator
# harness for FUZZ_SECONDS, then the hypothesis harness tests with a big budget.
FUZZ_SECONDS ?= 60
FUZZ_OUT := build/fuzz
FUZZ_CFLAGS := -std=c99 -g -O1 -Wall -Wextra -Werror -DMB_DEBUG -Inative \
	-fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
FUZZ_HARNESSES := reader codecs media

fuzz: $(STAMP) $(FUZZ_OUT)/fuzz_alloc
	@$(PY) -c 'import atheris' 2>/dev/null || $(PY) -m pip install -q atheris || true
	@for h in $(FUZZ_HARNESSES); do \
		mkdir -p $(FUZZ_OUT)/corpus-$$h && \
		$(PY) fuzz/fuzz_$$h.py --seeds $(FUZZ_OUT)/corpus-$$h >/dev/null && \
		if $(PY) -c 'import atheris' 2>/dev/null; then \
			echo "== atheris: fuzz_$$h for $(FUZZ_SECONDS) s"; \
			$(PY) fuzz/fuzz_$$h.py -max_total_time=$(FUZZ_SECONDS) -timeout=20 -rss_limit_mb=4096 \
				-print_final_stats=1 -artifact_prefix=$(FUZZ_OUT)/$$h- \
				$(FUZZ_OUT)/corpus-$$h 2>$(FUZZ_OUT)/$$h.log || { tail -40 $(FUZZ_OUT)/$$h.log; exit 1; }; \
			grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec)' $(FUZZ_OUT)/$$h.log; \
		else \
			echo "== atheris unavailable: seeded random mutation of fuzz_$$h for $(FUZZ_SECONDS) s"; \
			$(PY) fuzz/fuzz_$$h.py --random $(FUZZ_SECONDS) || exit 1; \
		fi; \
	done
	@echo "== libFuzzer: fuzz_alloc (ASan+UBSan) for $(FUZZ_SECONDS) s"
	@mkdir -p $(FUZZ_OUT)/corpus-alloc
	@$(FUZZ_OUT)/fuzz_alloc -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
		-print_final_stats=1 -artifact_prefix=$(FUZZ_OUT)/alloc- \
		$(FUZZ_OUT)/corpus-alloc 2>$(FUZZ_OUT)/alloc.log || { tail -40 $(FUZZ_OUT)/alloc.log; exit 1; }
	@grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec)' $(FUZZ_OUT)/alloc.log
	@echo "== hypothesis: harness tests with a big example budget"
	MEMBUF_FUZZ_RUNS=10 MEMBUF_FUZZ_EXAMPLES=1500 $(PY) -m pytest -q tests/test_fuzz_smoke.py
	@echo "== crash fuzz (fuzz/crash.py): 200 child processes x 500 random API steps, new seeds"
	@$(PY) fuzz/crash.py --runs 200 --steps 500 --budget-seconds $$((5 * $(FUZZ_SECONDS)))

# clang from Debian when missing (libFuzzer ships with it)
$(FUZZ_OUT)/fuzz_alloc: fuzz/fuzz_alloc.c $(NATIVE)
	@command -v clang >/dev/null 2>&1 || { apt-get install -y -q clang || \
		{ apt-get update -q && apt-get install -y -q clang; }; }
	@mkdir -p $(FUZZ_OUT)
	clang $(FUZZ_CFLAGS) -o $@ fuzz/fuzz_alloc.c $(NATIVE_SRC) -lpthread

# ---- soak (loopback only, bounded): make soak [SOAK_MINUTES=2 SOAK_CONNECTIONS=500 ...] ----
# Well-behaved frame clients and media publishers next to hostile peers (docs/reliability.md).
SOAK_MINUTES ?= 2
SOAK_CONNECTIONS ?= 500
SOAK_MEDIA ?= 16
SOAK_HOSTILE ?= 32

soak: $(STAMP)
	[ "$$(ulimit -n)" -ge 4096 ] || ulimit -n 4096 2>/dev/null || true; $(PY) fuzz/soak.py --minutes $(SOAK_MINUTES) \
		--connections $(SOAK_CONNECTIONS) --media $(SOAK_MEDIA) --hostile $(SOAK_HOSTILE)

# ---- micro-benchmarks: every hot call against its baseline (pytest-benchmark) ---------
# make bench-micro [MICRO_MAX_TIME=0.5 MICRO_ARGS=...]: benchmarks/micro, one table per group,
#   times per call; the run is saved under benchmarks/.micro/ (git-ignored).
#   MICRO_ARGS=--benchmark-compare also shows the latest saved run next to this one.
# make bench-micro-compare: the last two saved runs side by side, change in percent
#   (never fails on a timing). make test-micro: each benchmark once, untimed, checked.
# docs/benchmarks.md, section "Micro-benchmarks".
MICRO_DIR := benchmarks/micro
MICRO_STORE := benchmarks/.micro
MICRO_MAX_TIME ?= 0.5
MICRO_ARGS ?=
MICRO_TABLE := --benchmark-columns=min,median,iqr,mean,rounds --benchmark-name=short \
	--benchmark-group-by=group --benchmark-sort=min

.PHONY: bench-micro bench-micro-compare test-micro

bench-micro: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider $(MICRO_DIR) --benchmark-only --benchmark-disable-gc \
		--benchmark-max-time=$(MICRO_MAX_TIME) $(MICRO_TABLE) \
		--benchmark-storage=file://$(CURDIR)/$(MICRO_STORE) --benchmark-autosave $(MICRO_ARGS)

# Run from benchmarks/micro so that pytest-benchmark loads its conftest.py (times per call).
bench-micro-compare: $(STAMP)
	@runs="$$(ls -1tr $(CURDIR)/$(MICRO_STORE)/*/[0-9]*.json 2>/dev/null | tail -n 2)"; \
	if [ "$$(echo $$runs | wc -w)" -lt 2 ]; then \
		echo "bench-micro-compare: needs two saved runs in $(MICRO_STORE)/; run make bench-micro twice"; exit 1; fi; \
	echo "comparing (reference first):"; for r in $$runs; do echo "  $$r"; done; \
	cd $(MICRO_DIR) && $(CURDIR)/$(VENV)/bin/pytest-benchmark --storage file://$(CURDIR)/$(MICRO_STORE) \
		compare --between=min,median --name=short --group-by=group --sort=min $$runs

test-micro: $(STAMP)
	$(PY) -m pytest -q benchmarks/micro --benchmark-disable -p no:cacheprovider
