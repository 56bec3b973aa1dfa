"""Shared test settings: small, deterministic, CPU."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')


import fnmatch  # noqa: E402

import pytest  # noqa: E402

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
