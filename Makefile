# fpgaprint: set-up, tests and the end-to-end demo. `make demo` and `make test` install first.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
TORCH   := torch==2.13.0
UV      := uv==0.13.9
FINN    := finn-plus==1.6.1
DEMO    ?= build/demo
PYTEST_ARGS ?=
# test workers: one per core (pytest-xdist); a test file stays on one worker, so its module
# fixtures are made once
TEST_WORKERS ?= auto

.PHONY: install test demo bench clean lint

install: $(STAMP)

# FINN+ 1.6.1 pins brevitas==0.13.0 (setuptools<70) while torch 2.13 needs setuptools>=77:
# install torch, then FINN+'s requirements with brevitas 0.13.4 (requirements/lock.txt),
# then FINN+ itself without its pins. pip installs torch (the machine's CPU wheel on disk) and
# uv; uv installs the rest of the lock, pin for pin, in parallel.
UVPIP   := $(BIN)/uv pip install -q --python $(BIN)/python
$(STAMP): requirements/lock.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check $(TORCH) $(UV)
	$(UVPIP) -r requirements/lock.txt
	$(UVPIP) --no-deps $(FINN)
	$(UVPIP) --no-deps --no-build-isolation -e .
	touch $(STAMP)

# bytecode caches on, whatever the caller's PYTHONDONTWRITEBYTECODE: pytest keeps its rewritten
# test modules there too (about 3 s per worker), and every child process reuses them
test: $(STAMP)
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile \
		$(PYTEST_ARGS) tests

demo: $(STAMP)
	$(BIN)/python -m fpgaprint.harness.demo --out $(DEMO)

bench: $(STAMP)
	test -f $(DEMO)/package/manifest.json || $(MAKE) demo
	$(BIN)/python bench/compile.py
	$(BIN)/python bench/board.py
	$(BIN)/python bench/link.py --package $(DEMO)/package
	$(BIN)/python bench/reliability.py --package $(DEMO)/package --trusted-key $(DEMO)/keys/signing.pub
	$(BIN)/python bench/flood.py --package $(DEMO)/package --trusted-key $(DEMO)/keys/signing.pub
	$(BIN)/python bench/fingerprint.py
	$(BIN)/python bench/rtlsim.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/bist.py

clean:
	rm -rf build .pytest_cache
