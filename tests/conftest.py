"""Shared test settings: small, deterministic, CPU."""

import os
import shutil
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')

# One persistent XLA compilation cache for the test session, set before JAX
# is imported: the xdist workers and every child process they start (`pga`
# commands, several-process runs) inherit it, so a program compiled once (the
# same tiny train step appears in dozens of tests) is read back, not compiled
# again. A cache hit is the same executable, so bitwise checks are unaffected.
# Made by the process that imports this first (the xdist controller) and
# removed when it ends; a JAX_COMPILATION_CACHE_DIR already set is used as is.
_OWN_XLA_CACHE = None
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _OWN_XLA_CACHE = tempfile.mkdtemp(prefix='pga_jax_tests_xla_cache.')
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _OWN_XLA_CACHE
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.1')

# The convolution forms are not measured in tests (each layer takes its first
# candidate form; every form is exact, and tests/test_kernel_choice.py,
# tests/test_run_forms.py and the benchmark's CLI test turn measuring back on
# to test it). Measuring compiles every candidate of every new layer shape,
# and with two xdist workers loading the CPU no measurement ever settles.
os.environ.setdefault('PGA_JAX_CONV_FORMS', 'first')


import fnmatch  # noqa: E402

import pytest  # noqa: E402


def pytest_unconfigure(config):
  del config
  if _OWN_XLA_CACHE is not None:
    shutil.rmtree(_OWN_XLA_CACHE, ignore_errors=True)


SLOW_TESTS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'slow_tests.txt')


def slow_test_patterns(path: str = SLOW_TESTS_FILE) -> list:
  """The fnmatch patterns of tests/slow_tests.txt, '[' taken literally."""
  with open(path) as f:
    lines = [line.strip() for line in f]
  return [line.replace('[', '[[]') for line in lines if line and not line.startswith('#')]


def pytest_collection_modifyitems(config, items):
  """Marks `slow` the tests tests/slow_tests.txt lists (`make test` skips them)."""
  del config
  patterns = slow_test_patterns()
  for item in items:
    if any(fnmatch.fnmatchcase(item.nodeid, p) for p in patterns):
      item.add_marker(pytest.mark.slow)
