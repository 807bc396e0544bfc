# cpex: `make` builds everything and runs the demo; `make test` runs every suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt tests/requirements-pycpex.txt sdk-python/pyproject.toml | cksum | cut -d' ' -f1)
LIB := build/lib/libcpex.so.1
PYDIRS := sdk-python/cpexrt sdk-python/setup.py codegen/cpex_codegen ffi/build_lib.py tests/install sdk-python/tests codegen/tests tests/plugins tests/demos examples/authoring examples/plugins examples/python examples/install bench/run.py examples/codegen/kvstore/python
# The second library made by the generator (docs/codegen.md): libkv, a key-value store.
KV := examples/codegen/kvstore
KV_LIB := build/examples/kvstore/libkv.so.1

PYDIRS += bench/observe.py
GOMODS := sdk-go examples bench examples/install

# cgo finds cpex.h and libcpex.so.1 through CGO_CFLAGS / CGO_LDFLAGS (sdk-go/cgo.go):
# here, this checkout's include/ and build/lib. For go commands run by hand in this
# checkout: eval "$$(make -s go-env)".
export CGO_CFLAGS := -O2 -g -I$(CURDIR)/include
export CGO_LDFLAGS := -O2 -g -L$(CURDIR)/build/lib -Wl,-rpath,$(CURDIR)/build/lib
DIST := build/dist

.PHONY: all venv lib lib-kv codegen codegen-check abi-check test lint test-python test-go test-fuzz test-example-codegen test-install typecheck demo demos bench bench-observe dist go-env clean

all: lib demo

venv: $(STAMP)

$(STAMP): requirements.txt tests/requirements-pycpex.txt sdk-python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r tests/requirements-pycpex.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e sdk-python
	touch $@

# Every library the generator makes: cpex (codegen/layout.yaml, the default) and libkv.
codegen: $(STAMP)
	cd codegen && ../$(PY) -m cpex_codegen
	cd codegen && ../$(PY) -m cpex_codegen --layout ../$(KV)/layout.yaml

# Drift of the generated files, the header checks, and the ABI check against the newest
# released header in include/abi/ (include/abi/README.md).
codegen-check: $(STAMP)
	cd codegen && ../$(PY) -m cpex_codegen --check
	cd codegen && ../$(PY) -m cpex_codegen --layout ../$(KV)/layout.yaml --check

# The ABI check alone, on the committed include/cpex.h.
abi-check: $(STAMP)
	cd codegen && ../$(PY) -m cpex_codegen.abi_check

# The library's interpreter writes no bytecode (ffi/runtime.c): the .pyc files of the
# engine and the demo plugins are compiled here, or each start-up would compile every
# module changed since (a checkout, a branch switch): about 90 ms.
lib: $(LIB)
	@$(PY) -m compileall -q sdk-python/cpexrt examples/plugins

$(LIB): $(STAMP) ffi/build_lib.py codegen/cpex_codegen/build.py codegen/layout.yaml ffi/runtime.c ffi/fastpath.c ffi/remote.c ffi/handles.c ffi/natives.c ffi/generated/shims.c ffi/generated/unchanged_result.c ffi/generated/embedding_api.h include/cpex.h
	$(PY) ffi/build_lib.py

lib-kv: $(KV_LIB)

# Regenerates libkv's files from its schema, then builds it: the one command of
# docs/codegen.md's walkthrough.
$(KV_LIB): $(STAMP) codegen/cpex_codegen/*.py codegen/templates/*.j2 ffi/runtime.c $(KV)/layout.yaml $(KV)/schema/*.yaml
	cd codegen && ../$(PY) -m cpex_codegen --layout ../$(KV)/layout.yaml --build

# libkv from Go and from Python: its demos, its tests, and libcpex beside it in one Go
# process (examples/codegen/kvstore/together).
test-example-codegen: lib lib-kv
	cd examples && go run ./codegen/kvstore/cmd/kvdemo
	$(PY) $(KV)/python/demo.py
	cd examples && go test -race -count=1 ./codegen/...
	$(PY) -m pytest -p no:cacheprovider $(KV)/python/tests

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

# cpexrt's sdist and wheel (cp311, this platform; libcpex inside), as pip would build
# them (sdk-python/setup.py), into build/dist.
dist: $(STAMP)
	rm -rf $(DIST)
	$(PY) -m build --quiet --no-isolation --outdir $(DIST) sdk-python

# Install anywhere: the README's Install commands, run as written, in fresh venvs in a
# temporary folder (the wheel for a Go host built there, the sdist for a Python host,
# mypy on that host against the installed package); nothing of this checkout but
# sdk-go's source and the dist files.
test-install: dist
	$(PY) tests/install/run.py --dist $(DIST)

go-env:
	@echo "export CGO_CFLAGS='$(CGO_CFLAGS)' CGO_LDFLAGS='$(CGO_LDFLAGS)'"

test: lint codegen-check typecheck test-python test-go test-fuzz test-example-codegen test-install

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
