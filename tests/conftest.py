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
# A JAX_COMPILATION_CACHE_DIR already set is used as is and kept (the
# Makefile sets one per CPU that lasts between runs); otherwise the process
# that imports this first (the xdist controller) makes one for the session
# and removes it when the session ends.
_OWN_XLA_CACHE = None
if not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
  _OWN_XLA_CACHE = tempfile.mkdtemp(prefix='pga_jax_tests_xla_cache.')
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _OWN_XLA_CACHE
# Every program is kept, however quick its compile: the tests' eager
# operations and small jitted checks are thousands of programs under 0.1 s
# each, and reading one back costs less than compiling it (`make test` with a
# warm cache, AMD EPYC family 23: 4:22 keeping programs of 0.1 s and more;
# 3:20 keeping all, with pga_jax.testing's checks jitted).
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

# The convolution forms are not measured in tests (each layer takes its first
# candidate form; every form is exact, and tests/test_kernel_choice.py,
# tests/test_run_forms.py and the benchmark's CLI test turn measuring back on
# to test it). Measuring compiles every candidate of every new layer shape,
# and with two xdist workers loading the CPU no measurement ever settles.
os.environ.setdefault('PGA_JAX_CONV_FORMS', 'first')

# Each xdist worker on its own share of the CPUs (gw0 the first, gw1 the
# second, ...), taken before JAX starts its thread pool: XLA:CPU sizes the
# pool by the CPUs a process may use, so two workers each running a pool as
# wide as the machine wait on each other's threads at every parallel op.
# Measured on 2 cores (AMD EPYC family 23): `make test` 4:47 unpinned, 4:22
# pinned. The processes a worker starts inherit its share.
# PGA_JAX_TEST_PIN_WORKERS=0 leaves every worker on every CPU.
if (
  os.environ.get('PGA_JAX_TEST_PIN_WORKERS', '1') != '0'
  and os.environ.get('PYTEST_XDIST_WORKER', '').startswith('gw')
  and hasattr(os, 'sched_setaffinity')
):
  _cpus = sorted(os.sched_getaffinity(0))
  _workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
  _worker = int(os.environ['PYTEST_XDIST_WORKER'][2:])
  if 1 < _workers <= len(_cpus):
    try:
      os.sched_setaffinity(0, _cpus[_worker::_workers])
    except OSError:  # a sandbox that forbids it: the worker keeps every CPU
      pass


import fnmatch  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402

import pytest  # noqa: E402


def pytest_unconfigure(config):
  del config
  if _OWN_XLA_CACHE is not None:
    shutil.rmtree(_OWN_XLA_CACHE, ignore_errors=True)


SLOW_TESTS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'slow_tests.txt')


@functools.lru_cache(maxsize=None)
def slow_test_patterns(path: str = SLOW_TESTS_FILE) -> tuple:
  """The fnmatch patterns of tests/slow_tests.txt, '[' taken literally."""
  with open(path) as f:
    lines = [line.strip() for line in f]
  return tuple(line.replace('[', '[[]') for line in lines if line and not line.startswith('#'))


MODULE_SECONDS_FILE = os.path.join(
  os.path.dirname(os.path.abspath(__file__)), 'module_seconds.json'
)


def module_seconds(path: str = MODULE_SECONDS_FILE) -> dict:
  """{test module file name: {'all': seconds of all its tests, 'unit': seconds of
  its unit-tier tests}} in a recorded full run."""
  try:
    with open(path) as f:
      recorded = json.load(f)
    return {str(k): {'all': float(v['all']), 'unit': float(v['unit'])} for k, v in recorded.items()}
  except (OSError, ValueError, TypeError, KeyError):  # none, or not this format: no order
    return {}


def pytest_itemcollected(item):
  """Marks `slow` the tests tests/slow_tests.txt lists (`make test` skips them)."""
  if any(fnmatch.fnmatchcase(item.nodeid, p) for p in slow_test_patterns()):
    item.add_marker(pytest.mark.slow)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
  """Puts the modules that took longest in the recorded run first, weighing each by
  the tests selected: the unit tier's seconds when no slow test of it runs.

  The Makefile hands whole modules to the xdist workers (`--dist loadfile`,
  so a module's fixtures are built once), in collection order
  (`--no-loadscope-reorder`; xdist would otherwise sort them by their number
  of tests): longest first keeps one long module from starting last and
  running alone at the end.
  Unrecorded modules keep their place after the recorded ones; the order of
  tests within a module is unchanged.
  """
  del config
  seconds = module_seconds()
  with_slow = {os.path.basename(str(item.path)) for item in items if 'slow' in item.keywords}

  def weight(module):
    recorded = seconds.get(module, {'all': 0.0, 'unit': 0.0})
    return recorded['all'] if module in with_slow else recorded['unit']

  position = {item.nodeid: i for i, item in enumerate(items)}
  items.sort(key=lambda item: (-weight(os.path.basename(str(item.path))), position[item.nodeid]))


def pytest_addoption(parser):
  parser.addoption(
    '--record-module-seconds',
    metavar='PATH',
    default=None,
    help='write {module: {all: seconds, unit: seconds}} of this run to PATH (JSON; '
    'tests/module_seconds.json '
    'orders the modules of later runs)',
  )


_RECORDED_SECONDS: dict = {}


def pytest_runtest_logreport(report):
  """Sums each module's setup, call and teardown seconds, all tests and the unit
  tier's apart (in the xdist controller too, which receives its workers' reports)."""
  module = os.path.basename(report.nodeid.split('::')[0])
  recorded = _RECORDED_SECONDS.setdefault(module, {'all': 0.0, 'unit': 0.0})
  recorded['all'] += report.duration
  if 'slow' not in report.keywords:
    recorded['unit'] += report.duration


def pytest_sessionfinish(session):
  path = session.config.getoption('--record-module-seconds')
  if path and not hasattr(session.config, 'workerinput'):  # the controller, or no xdist
    ordered = sorted(_RECORDED_SECONDS.items(), key=lambda kv: -kv[1]['all'])
    with open(path, 'w') as f:
      json.dump({k: {t: round(v[t], 1) for t in ('all', 'unit')} for k, v in ordered}, f, indent=1)
      f.write('\n')


@pytest.fixture(scope='session')
def emulator():
  """The URL of a GCS emulator (tests/gcs_emulator.py), started once per test
  process by the first test that asks for it."""
  from tests import gcs_emulator  # pylint: disable=g-import-not-at-top

  with gcs_emulator.running() as url:
    yield url
