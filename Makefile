# One command each: `make quickstart` (install + train LPGA on Fashion-MNIST),
# `make test` (install + run the test suite). Both install everything first.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_WORKERS ?= 2

.PHONY: install data quickstart test

$(STAMP): requirements.txt requirements-test.txt setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet -r requirements-test.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP) data

# Fashion-MNIST, the offline default dataset: Debian's dataset-fashion-mnist.
data:
	@bash experiments/install_fashion_mnist.sh

quickstart: install
	$(VENV)/bin/pga train --config=experiments/configs/quickstart.py --workdir=runs/quickstart

test: install
	$(PY) -m pytest -n $(TEST_WORKERS)
