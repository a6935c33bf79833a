# Two entry points for a fresh machine (Python 3.11): `make demo` and `make test`.
# Both create .venv on first use, installing torch 2.13.0 (CPU build) first, then the package with
# the CPU, test and train extras and the exact versions CI tests (constraints.txt).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test test-fast parity parity-caffe parity-torch bench

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[cpu,test,train]"
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

# Every Caffe network from its real deploy prototxt (random caffemodel), verified on every engine;
# each step's time is printed.
CAFFE_ARCHS ?= alexnet-caffe googlenet-caffe resnet152-caffe vgg16-caffe resnet152-hybrid1365-caffe vgg16-hybrid1365-caffe
parity-caffe: install
	for a in $(CAFFE_ARCHS); do \
	  start=$$(date +%s); \
	  $(VENV)/bin/crossmodal demo --arch $$a --out-dir "$${PARITY_DIR:-parity-out}/$$a" || exit 1; \
	  echo "== parity $$a: $$(( $$(date +%s) - start )) s"; \
	  if [ -n "$${PARITY_CLEAN:-}" ]; then rm -rf "$${PARITY_DIR:-parity-out}/$$a"; fi; \
	done

# The Places365 PyTorch zoo at full size, each in its released layout (random weights), converted
# and verified on every engine; prints each network's time.
ZOO_ARCHS ?= alexnet resnet18 resnet50 wideresnet18 densenet161
parity-torch: install
	@for a in $(ZOO_ARCHS); do \
	  start=$$(date +%s); \
	  $(VENV)/bin/crossmodal demo --arch $$a --out-dir "$${PARITY_DIR:-parity-out}/$$a" || exit 1; \
	  echo "parity-torch $$a: $$(( $$(date +%s) - start )) s"; \
	  if [ -n "$${PARITY_CLEAN:-}" ]; then rm -rf "$${PARITY_DIR:-parity-out}/$$a"; fi; \
	done

bench: install
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done
