"""Small fixtures shared by the training tests: tiny configs and synthetic data."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

from pga_jax import config as config_lib
from pga_jax.data import idx, synthetic


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, timeout=300):
  """`python -m pga_jax.cli ARGS` from the repository root, output captured."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run(
    [sys.executable, '-m', 'pga_jax.cli', *args],
    capture_output=True,
    text=True,
    timeout=timeout,
    cwd=REPO,
    env=env,
  )


def run_python(*args, timeout=300, cwd=None, **env):
  """`python ARGS` in `cwd` with `env` added to the environment (and TensorFlow's
  logging off), output captured; asserts that it exits 0."""
  result = subprocess.run(
    [sys.executable, *args],
    capture_output=True,
    text=True,
    timeout=timeout,
    cwd=cwd,
    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', **env),
    check=False,
  )
  assert result.returncode == 0, result.stderr[-4000:]
  return result


# Builds the configs of several fashion_study.py command lines in one process:
# each command's flags are parsed afresh (absl's unparse_flags resets every
# flag to its default) and passed to the script's own study_configs, which is
# what its --print_configs prints (tests/test_study_scripts.py checks the two
# agree).
_STUDY_CONFIGS_CHILD = """
import json, sys
from absl import flags
sys.path.insert(0, sys.argv[1])
from experiments import fashion_study
out = []
for argv in json.loads(sys.stdin.read()):
  flags.FLAGS.unparse_flags()
  flags.FLAGS(argv)
  out.append({n: c.to_dict() for n, c in fashion_study.study_configs(flags.FLAGS).items()})
print(json.dumps(out, sort_keys=True))
"""


def fashion_study_configs(argvs, repo: str) -> list:
  """[{run name: config dict}] that experiments/fashion_study.py would train for
  each argv (argv[0] the script, then its flags), built in one child process."""
  result = subprocess.run(
    [sys.executable, '-c', _STUDY_CONFIGS_CHILD, repo],
    input=json.dumps([list(argv) for argv in argvs]),
    capture_output=True,
    text=True,
    timeout=300,
    cwd=repo,
    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'),
    check=False,
  )
  assert result.returncode == 0, result.stderr[-4000:]
  built = json.loads(result.stdout.strip().splitlines()[-1])
  assert len(built) == len(argvs), built
  return built


def make_idx_dir(tmp_path_factory, num_train: int = 96, num_test: int = 48) -> str:
  """A folder of synthetic IDX train (seed 0) and t10k (seed 1) splits."""
  folder = str(tmp_path_factory.mktemp('idx'))
  write_idx_images(folder, synthetic_digits(num_train))
  write_idx_images(folder, synthetic_digits(num_test, seed=1), prefix='t10k')
  return folder


def write_idx_images(folder: str, images: np.ndarray, prefix: str = 'train') -> None:
  """Writes uint8 (N, 28, 28) images as an MNIST-format IDX file (gzipped)."""
  idx.write_uint8_split(folder, prefix, images, np.arange(len(images), dtype=np.uint8) % 10)


def synthetic_digits(n: int, seed: int = 0) -> np.ndarray:
  """uint8 (n, 28, 28) blob images (`pga_jax.data.synthetic.blob_images`)."""
  return synthetic.blob_images(n, (28, 28, 1), seed)[..., 0]


# A tiny run: a few steps of conv_tiny (conv_mnist's layers at 1/8 of its
# widths) at batch 8 on synthetic IDX data, for the tests of what surrounds
# the model (training loop, checkpoints, CLI, storage, several processes); the
# paper's architectures have tests of their own (test_models, the
# transcription, the fast paths). An in-process tiny run took 7-8.5 s with
# conv_mnist and 2-3.5 s with conv_tiny (warm compilation cache, one CPU).
# Figures only at the last step (a run always writes them there): each write
# decodes 100 samples, reconstructions and interpolations.
TINY_FIELDS = dict(
  dataset='idx',
  arch='conv_tiny',
  batch_size=8,
  num_steps=6,
  init_steps=2,
  log_every=2,
  sample_every=1000,
  checkpoint_every=3,
)


def tiny_config(data_dir: str, method: str = 'lpga', **overrides):
  """`method` (LPGA by default) as a tiny run (TINY_FIELDS) on `data_dir`."""
  config = config_lib.base_config(method)
  for key, value in dict(TINY_FIELDS, data_dir=data_dir, **overrides).items():
    config[key] = value
  return config


def config_file_text(data_dir: str, method: str = 'lpga', extra_lines: str = '', **overrides):
  """The text of a config file for `pga train --config=FILE` that builds
  `tiny_config(data_dir, method, **overrides)`, then runs `extra_lines`
  (indented code acting on the config `c`)."""
  lines = ['from pga_jax import config as config_lib', '', '', 'def get_config():']
  lines.append(f'  c = config_lib.base_config({method!r})')
  for key, value in dict(TINY_FIELDS, data_dir=data_dir, **overrides).items():
    lines.append(f'  c.{key} = {value!r}')
  return '\n'.join(lines) + '\n' + extra_lines + '  return c\n'


# A command prefix that runs a process on a "small disk": no file it writes may
# grow beyond 150 KB (bash's ulimit; SIGXFSZ ignored, so the write fails with
# EFBIG). A tiny run's checkpoint write then fails (conv_tiny's parameters and
# momentum, ~0.9 MB, go to a few files of 0.2-0.6 MB), while its log and
# event file stay below 90 KB.
SMALL_DISK = ['bash', '-c', 'trap "" XFSZ; ulimit -f 150; exec "$@"', 'small-disk']


def free_port() -> int:
  """A TCP port of 127.0.0.1 that nothing listens on now."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]
