# Two entry points for a fresh machine (Python 3.11): `make demo` and `make test`.
# Both create .venv on first use, installing torch 2.13.0 (CPU build) first, then the package with
# the CPU extra and the exact versions CI tests (constraints.txt).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test test-fast parity bench

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[cpu,test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/crossmodal demo --out-dir demo-out

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

parity: install
	$(VENV)/bin/crossmodal demo --layout csail --out-dir "$${PARITY_DIR:-parity-out}"

bench: install
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done
