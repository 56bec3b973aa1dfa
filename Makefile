# One command each: `make quickstart` (install + train LPGA on Fashion-MNIST),
# `make test` (install + the unit tier of the tests, a few minutes),
# `make test-all` (install + formatting/lint check + every test; what CI runs).
# All install everything first.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_WORKERS ?= 2
# The XLA compilation cache the tests keep between runs (`make test`,
# `make test-all`, so CI on the same machine too): a program compiled in one
# run is read back in the next. One folder per CPU (model and instruction
# set: XLA:CPU compiles for the host's), under ~/.cache; JAX keys the entries
# by its own version and the program. `make TEST_XLA_CACHE= test` runs with a
# fresh cache for the session only (tests/conftest.py); deleting the folder is
# always safe.
CPU_KEY := $(shell grep -m4 -E '^(model name|cpu family|model|flags)[[:space:]]*:' /proc/cpuinfo 2>/dev/null | md5sum | cut -c1-12)
TEST_XLA_CACHE ?= $(HOME)/.cache/pga_jax/test_xla_cache/$(CPU_KEY)
TEST_ENV := $(if $(TEST_XLA_CACHE),JAX_COMPILATION_CACHE_DIR=$(TEST_XLA_CACHE))
# The cache keeps every program the tests compile, and a changed program is a
# new entry: past TEST_XLA_CACHE_MAX_MB the folder is emptied before a run.
TEST_XLA_CACHE_MAX_MB ?= 2048

.PHONY: install data quickstart test test-all trim-test-cache lint format accelerator-wheels accelerator-dry-run

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

# The unit tier: everything but the tests marked slow (training subprocesses,
# several processes, the experiment runners and study scripts, the emulator).
test: install trim-test-cache
	$(TEST_ENV) $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow"

# Every test, after the formatting and lint check.
test-all: install lint trim-test-cache
	$(TEST_ENV) $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

trim-test-cache:
	@if [ -n "$(TEST_XLA_CACHE)" ] && [ -d "$(TEST_XLA_CACHE)" ] && \
	  [ "$$(du -sm "$(TEST_XLA_CACHE)" | cut -f1)" -gt "$(TEST_XLA_CACHE_MAX_MB)" ]; then \
	  echo "emptying the tests' XLA cache $(TEST_XLA_CACHE) (over $(TEST_XLA_CACHE_MAX_MB) MB)"; \
	  rm -rf "$(TEST_XLA_CACHE)"; \
	fi

# ruff (pyproject.toml): `make format` rewrites, `make lint` only checks.
lint: install
	$(VENV)/bin/ruff format --check --quiet .
	$(VENV)/bin/ruff check --quiet .

format: install
	$(VENV)/bin/ruff format --quiet .
	$(VENV)/bin/ruff check --quiet --fix .

# Pure-Python wheels for experiments/accelerator_check.sh on an offline node
# (requirements-accelerator.txt). Then copy the repository with the folder:
#   experiments/accelerator_check.sh OUT_DIR --wheels wheels/accelerator
ACCELERATOR_WHEELS ?= wheels/accelerator
accelerator-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: \
		--dest $(ACCELERATOR_WHEELS) -r requirements-accelerator.txt
	@ls $(ACCELERATOR_WHEELS)

# The accelerator check on this machine's CPU, tiny sizes (a few minutes).
accelerator-dry-run: accelerator-wheels
	bash experiments/accelerator_check.sh runs/accelerator_dry_run --wheels $(ACCELERATOR_WHEELS) --dry-run
