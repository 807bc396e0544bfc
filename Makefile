# cpex: `make` builds everything and runs the demo; `make test` runs every suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)
LIB := build/lib/libcpex.so.1
PYDIRS := sdk-python/cpex codegen/cpex_codegen ffi/build_lib.py sdk-python/tests codegen/tests tests/plugins

.PHONY: all venv lib codegen codegen-check test test-python test-go typecheck demo bench clean

all: lib demo

venv: $(STAMP)

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

codegen: $(STAMP)
	cd codegen && ../$(PY) -m cpex_codegen

codegen-check: $(STAMP)
	cd codegen && ../$(PY) -m cpex_codegen --check

lib: $(LIB)

$(LIB): $(STAMP) ffi/build_lib.py ffi/runtime.c ffi/generated/shims.c ffi/generated/embedding_api.h include/cpex.h
	$(PY) ffi/build_lib.py

typecheck: $(STAMP)
	$(PY) -m mypy $(PYDIRS)

test-python: lib
	$(PY) -m pytest

test: codegen-check typecheck test-python

clean:
	rm -rf build
