# membuf: `make demo` and `make test` work on a fresh machine with python3, gcc and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.membuf-installed
NATIVE_SRC := $(wildcard native/*.c)
NATIVE := $(NATIVE_SRC) $(wildcard native/*.h native/*.cdef) native/build_ffi.py
SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
CFLAGS_TEST := -std=c99 -g -O1 -Wall -Wextra -Werror -Inative

.PHONY: all install demo test test-c test-py lint bench fuzz soak clean

all: install

install: $(STAMP)

$(STAMP): pyproject.toml setup.py $(NATIVE)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(STAMP)
	$(PY) -m membuf demo

test: $(STAMP) test-c lint test-py

test-py: $(STAMP)
	$(PY) -m pytest -q

LINT_DIRS := $(wildcard membuf tests benchmarks examples fuzz)

lint: $(STAMP)
	$(PY) -m ruff check $(LINT_DIRS)
	$(PY) -m mypy

# C tests: built and run under AddressSanitizer + UndefinedBehaviorSanitizer.
test-c: native/tests/test_alloc
	./native/tests/test_alloc

native/tests/test_alloc: native/tests/test_alloc.c $(NATIVE)
	$(CC) $(CFLAGS_TEST) $(SAN) -o $@ native/tests/test_alloc.c $(NATIVE_SRC) -lpthread

benchmarks/alloc_bench: benchmarks/alloc_bench.c $(NATIVE)
	$(CC) -std=c99 -O2 -Wall -Wextra -Inative -o $@ benchmarks/alloc_bench.c $(NATIVE_SRC) -lpthread -ldl

bench: $(STAMP) benchmarks/alloc_bench
	$(PY) -m membuf bench

clean:
	rm -rf build *.egg-info membuf/_native*.so native/tests/test_alloc benchmarks/alloc_bench
