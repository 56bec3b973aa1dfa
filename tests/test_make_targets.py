"""The Makefile's test targets: which XLA compilation cache they hand pytest,
and how it is kept from growing without end.

`make test` and `make test-all` keep the tests' compilation cache between
runs in one folder per CPU (XLA:CPU compiles for the host's instruction set,
so a cache must not move between CPU models); `TEST_XLA_CACHE=` leaves the
choice to tests/conftest.py (a folder for the session only).
"""

import hashlib
import os
import re
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_command(*make_args):
  """The pytest line `make -n` prints for the given arguments."""
  out = subprocess.run(
    ['make', '-n', '-C', REPO, *make_args], capture_output=True, text=True, check=True
  )
  lines = [line for line in out.stdout.splitlines() if ' -m pytest ' in line]
  assert len(lines) == 1, out.stdout
  return lines[0]


def cpu_key():
  """md5 of the first cpu family, model, model name and flags lines of
  /proc/cpuinfo, computed here without the Makefile's shell pipeline."""
  wanted = re.compile(r'^(model name|cpu family|model|flags)\s*:')
  with open('/proc/cpuinfo') as f:
    lines = [line for line in f if wanted.match(line)][:4]
  return hashlib.md5(''.join(lines).encode()).hexdigest()[:12]


@pytest.mark.parametrize('target', ['test', 'test-all'])
def test_the_test_targets_keep_one_compilation_cache_per_cpu(target):
  if not os.path.exists('/proc/cpuinfo'):
    pytest.fail('this test reads /proc/cpuinfo (Linux)')
  folder = os.path.join(os.path.expanduser('~'), '.cache', 'pga_jax', 'test_xla_cache', cpu_key())
  assert pytest_command(target).startswith(f'JAX_COMPILATION_CACHE_DIR={folder} ')


@pytest.mark.parametrize('target', ['test', 'test-all'])
def test_the_test_targets_hand_whole_modules_to_the_workers_in_collection_order(target):
  # Without --no-loadscope-reorder, xdist sorts the modules by their number of
  # tests and the order tests/conftest.py gives them (longest first) is lost:
  # a long one-test module can start last and run alone at the end.
  command = pytest_command(target).split()
  assert '--dist' in command and command[command.index('--dist') + 1] == 'loadfile'
  assert '--no-loadscope-reorder' in command


def test_an_empty_test_xla_cache_leaves_the_cache_to_the_session():
  assert 'JAX_COMPILATION_CACHE_DIR' not in pytest_command('TEST_XLA_CACHE=', 'test')
  assert pytest_command('TEST_XLA_CACHE=/tmp/elsewhere', 'test').startswith(
    'JAX_COMPILATION_CACHE_DIR=/tmp/elsewhere '
  )


def trim(folder, max_mb):
  subprocess.run(
    [
      'make',
      '-C',
      REPO,
      'trim-test-cache',
      f'TEST_XLA_CACHE={folder}',
      f'TEST_XLA_CACHE_MAX_MB={max_mb}',
    ],
    capture_output=True,
    text=True,
    check=True,
  )


def test_a_cache_past_its_size_limit_is_emptied_and_a_smaller_one_kept(tmp_path):
  folder = tmp_path / 'cache'
  folder.mkdir()
  (folder / 'entry-cache').write_bytes(os.urandom(3 * 1024 * 1024))  # 3 MB
  trim(folder, 4)
  assert (folder / 'entry-cache').stat().st_size == 3 * 1024 * 1024
  trim(folder, 2)
  assert not folder.exists()
  trim(folder, 2)  # a missing folder is not an error
