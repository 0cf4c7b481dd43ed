# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Debian's package of the real Fashion-MNIST files (used by the demo and some tests).
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)

.PHONY: demo test test-slow lint data browser bench-gpu clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,export]'
	@touch $(STAMP)

data:
	@if [ ! -f $(FMNIST) ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's dataset-fashion-mnist"; \
		($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
			|| echo "could not install dataset-fashion-mnist: tests that need it will be skipped"; \
	fi

# Debian's chromium, for the test that opens the HTML report in a headless browser (skipped without it).
browser:
	@if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium (for the report's browser test)"; \
		($(SUDO) apt-get install -y -qq chromium >/dev/null 2>&1 || \
		 ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null)) \
			|| echo "could not install chromium: the report's browser test will be skipped"; \
	fi

demo: $(STAMP) data
	$(PY) -m resnets demo --out runs/demo

test: $(STAMP) data browser
	$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP) data
	$(PY) -m pytest -q -m slow

# The GPU suite: every speed case beside its reference, and the GPU tests; results in $(BENCH_OUT)/.
# It needs no virtual environment: on a GPU machine, `make bench-gpu` runs with the machine's own torch.
BENCH_OUT ?= bench-gpu
BENCH_PY  ?= $(shell [ -x $(PY) ] && echo $(PY) || echo $(PYTHON))
bench-gpu:
	PYTHONPATH=src $(BENCH_PY) benchmarks/gpu_suite.py --out $(BENCH_OUT)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
