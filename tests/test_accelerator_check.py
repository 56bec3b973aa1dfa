"""experiments/accelerator_check.sh: the core without TensorFlow.

- the modules the check runs (models, losses, methods, train step, data
  batches, `pga benchmark`) import with TensorFlow, tfds, clu and Pillow
  refused (fast, every CI run);
- the peak FLOP/s table matches device kinds;
- slow: the whole `--dry-run` in a fresh venv that has only jax, jaxlib, flax,
  optax, chex and orbax-checkpoint (our pins) plus the wheels of
  `make accelerator-wheels`, and every stage reports TensorFlow unimported.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest
import uv

from experiments import accelerator_check
from pga_jax.conv_forms import choice

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE_PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'chex', 'orbax-checkpoint')


def test_core_modules_import_without_tensorflow_or_pillow():
  code = (
    'import sys\n'
    'from experiments import accelerator_check as a\n'
    'a.refuse_tensorflow()\n'
    "a.REFUSED = a.REFUSED + ('PIL', 'matplotlib')\n"
    'import pga_jax.models, pga_jax.losses, pga_jax.methods, pga_jax.train_step\n'
    'import pga_jax.benchmark, pga_jax.data, pga_jax.config, pga_jax.cli\n'
    'import pga_jax.commands.benchmark\n'
    'from pga_jax.commands import benchmark\n'
    'benchmark.define_flags()\n'
    'print(sorted(set(a.REFUSED_ATTEMPTS)))\n'
    "print(sorted(m for m in sys.modules if m.split('.')[0] in a.REFUSED))\n"
  )
  out = subprocess.run(
    [sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.split('\n')[:2] == ['[]', '[]'], out.stdout


def test_peak_table_matches_device_kinds():
  assert accelerator_check.table_peak('NVIDIA A100-SXM4-80GB')['bfloat16'] == 312e12
  assert accelerator_check.table_peak('NVIDIA A10')['bfloat16'] == 125e12
  assert accelerator_check.table_peak('NVIDIA H100 PCIe')['float32'] == 51e12
  assert accelerator_check.table_peak('NVIDIA H100 80GB HBM3')['float32'] == 67e12
  assert accelerator_check.table_peak('Tesla T4')['bfloat16'] is None
  assert accelerator_check.table_peak('NVIDIA L40S')['float32'] == 91.6e12
  assert accelerator_check.table_peak('NVIDIA L4')['float32'] == 30.3e12
  assert accelerator_check.table_peak('cpu') is None


def test_usage_errors_are_one_line(tmp_path):
  script = os.path.join(REPO, 'experiments', 'accelerator_check.sh')
  out = subprocess.run(['bash', script], capture_output=True, text=True, check=False)
  assert out.returncode == 2 and 'usage:' in out.stderr
  out = subprocess.run(
    ['bash', script, str(tmp_path / 'out'), '--wheels', str(tmp_path / 'nowhere')],
    capture_output=True,
    text=True,
    check=False,
  )
  assert out.returncode == 2 and 'make accelerator-wheels' in out.stderr
  assert len(out.stderr.strip().splitlines()) == 1


def pinned(names):
  """`name==version` of each package, from requirements.txt."""
  pins = {}
  with open(os.path.join(REPO, 'requirements.txt')) as f:
    for line in f:
      match = re.match(r'^([A-Za-z0-9_.-]+)==(\S+)', line.strip())
      if match:
        pins[match.group(1).lower().replace('_', '-')] = match.group(0)
  return [pins[n] for n in names]


@pytest.mark.slow
def test_dry_run_in_a_fresh_venv_without_tensorflow(tmp_path):
  t0 = time.perf_counter()
  venv = tmp_path / 'venv'
  subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True, timeout=300)
  python = str(venv / 'bin' / 'python')
  # Only the packages the node has, at our pins; their dependencies at the
  # versions of requirements.txt (a constraints file installs nothing itself).
  # uv installs what pip would, from the same index settings, in a fraction of
  # the time; the venv keeps its own pip for `make accelerator-wheels`.
  subprocess.run(
    [uv.find_uv_bin(), 'pip', 'install', '--quiet', '--python', python]
    + ['-c', os.path.join(REPO, 'requirements.txt')]
    + pinned(CORE_PACKAGES),
    check=True,
    timeout=900,
  )
  for package in ('tensorflow', 'tensorflow_datasets', 'clu', 'ml_collections', 'pytest'):
    probe = subprocess.run([python, '-c', f'import {package}'], capture_output=True, check=False)
    assert probe.returncode != 0, f'{package} is installed in the fresh venv'
  wheels = tmp_path / 'wheels'
  subprocess.run(
    ['make', '-C', REPO, 'accelerator-wheels', f'ACCELERATOR_WHEELS={wheels}', f'PYTHON={python}'],
    check=True,
    timeout=600,
    capture_output=True,
  )
  out_dir = tmp_path / 'out'
  env = {
    k: v
    for k, v in os.environ.items()
    if k
    not in ('PYTHONPATH', 'PYTEST_ADDOPTS', 'VIRTUAL_ENV', 'PGA_JAX_CACHE_DIR', choice.FIXED_ENV)
  }
  env['PYTHON'] = python
  run = subprocess.run(
    [
      'bash',
      os.path.join(REPO, 'experiments', 'accelerator_check.sh'),
      str(out_dir),
      '--wheels',
      str(wheels),
      '--dry-run',
    ],
    env=env,
    capture_output=True,
    text=True,
    timeout=2700,
    check=False,
  )
  summary = json.loads((out_dir / 'summary.json').read_text())
  assert run.returncode == 0, (run.stderr[-3000:], json.dumps(summary, indent=1)[-3000:])
  assert summary['passed'] and not summary['failed_stages']
  # bfloat16 for conv_mnist only, the other architectures in float32.
  expected = {'env', 'tests', 'train', 'benchmark_conv_mnist_bfloat16'} | {
    f'benchmark_{a}_float32' for a in accelerator_check.ARCHS
  }
  assert set(summary['stages']) == expected
  for name in expected:
    result = json.loads((out_dir / f'{name}.json').read_text())
    assert result['status'] == 'ok' and result['tensorflow_imported'] is False, name
  env_result = json.loads((out_dir / 'env.json').read_text())
  assert env_result['pga_jax_file'].startswith(REPO)
  assert env_result['env']['PGA_JAX_CACHE_DIR'] == str(out_dir / 'kernel_cache')
  assert env_result['versions']['ml_collections'] is not None  # from the wheels
  tests = json.loads((out_dir / 'tests.json').read_text())
  assert tests['counts'] == {'passed': len(accelerator_check.DRY_RUN_TESTS)}
  train = json.loads((out_dir / 'train.json').read_text())
  assert train['final_step'] == train['steps'] and train['all_finite']
  bench = json.loads((out_dir / 'benchmark_conv_mnist_bfloat16.json').read_text())
  assert bench['compute_dtype'] == 'bfloat16' and bench['flops_per_sec'] > 0
  assert 0 < bench['fraction_of_measured_matmul_peak']
  # One timed step: no pipelined rate (nothing runs back to back), said so.
  assert bench['pipelined_images_per_sec'] is None
  assert 'pipelined n/a' in (out_dir / 'benchmark_conv_mnist_bfloat16.log').read_text()
  cache = json.loads((out_dir / 'kernel_cache' / choice.CACHE_FILE).read_text())
  assert any(k.startswith('upsample|cpu|') for k in cache)
  # The refusal of TensorFlow leaves JAX's compilation cache readable (the
  # session's cache, inherited): no stage reports a failed read.
  for log in out_dir.glob('*.log'):
    assert 'Error reading persistent compilation cache' not in log.read_text(), log.name
  print(f'dry run in a fresh venv: {time.perf_counter() - t0:.0f} s')
