# cpex: `make` builds everything and runs the demo; `make test` runs every suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt tests/requirements-pycpex.txt sdk-python/pyproject.toml | cksum | cut -d' ' -f1)
LIB := build/lib/libcpex.so.1
PYDIRS := sdk-python/cpexrt codegen/cpex_codegen ffi/build_lib.py sdk-python/tests codegen/tests tests/plugins tests/demos examples/authoring examples/plugins examples/python bench/run.py

PYDIRS += bench/observe.py

GOMODS := sdk-go examples bench

.PHONY: all venv lib codegen codegen-check abi-check test lint test-python test-go test-fuzz typecheck demo demos bench bench-observe clean

all: lib demo

venv: $(STAMP)

$(STAMP): requirements.txt tests/requirements-pycpex.txt sdk-python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r tests/requirements-pycpex.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e sdk-python
	touch $@

codegen: $(STAMP)
	cd codegen && ../$(PY) -m cpex_codegen

# Drift of the generated files, the header checks, and the ABI check against the newest
# released header in include/abi/ (include/abi/README.md).
codegen-check: $(STAMP)
	cd codegen && ../$(PY) -m cpex_codegen --check

# The ABI check alone, on the committed include/cpex.h.
abi-check: $(STAMP)
	cd codegen && ../$(PY) -m cpex_codegen.abi_check

lib: $(LIB)

$(LIB): $(STAMP) ffi/build_lib.py ffi/runtime.c ffi/fastpath.c ffi/generated/shims.c ffi/generated/unchanged_result.c ffi/generated/embedding_api.h include/cpex.h
	$(PY) ffi/build_lib.py

# ruff's lint rules and formatting (pyproject.toml, [tool.ruff]); `ruff format .` and
# `ruff check --fix .` fix most of what it reports.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy $(PYDIRS)

test-python: lib
	$(PY) -m pytest

test-go: lib
	@unformatted=$$(gofmt -l $(GOMODS)); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	for d in $(GOMODS); do (cd $$d && go vet ./...) || exit 1; done
	cd sdk-go && go test -race -count=1 ./...
	cd examples && go test -count=1 ./mcp-gateway/...

# A short run of each Go fuzz target (seeds and past crashers: sdk-go/testdata/fuzz).
# A count, not a duration: go1.26's fuzz coordinator can report a spurious "context
# deadline exceeded" when a -fuzztime duration expires (golang/go#75804, fixed in 1.27).
FUZZTIME ?= 100000x
test-fuzz: lib
	cd sdk-go && for t in FuzzInvokePayload FuzzInvokeExtensions FuzzConfig; do \
		go test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) . || exit 1; done

test: lint codegen-check typecheck test-python test-go test-fuzz

# The main demo: a Go host, generic payloads (examples/generic).
demo: lib
	cd examples && go run ./generic

# Every demo: Go and Python hosts, generic and CMF payloads.
demos: lib
	cd examples && go run ./generic && go run ./cmf
	cd examples && ../$(PY) python/generic_demo.py && ../$(PY) python/cmf_demo.py

# Every benchmark figure with its target and a same-run baseline (docs/architecture.md,
# "Performance targets"; results in bench/README.md); BENCH_ARGS e.g. "--long 0".
bench: lib
	$(PY) bench/run.py $(BENCH_ARGS)

# The cost of tracing (no-op, in-memory exporter) and decision records, against a
# same-run baseline (bench/README.md, "Observability").
bench-observe: lib
	$(PY) bench/observe.py

clean:
	rm -rf build
