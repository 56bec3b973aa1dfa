"""The stages of experiments/accelerator_check.sh, each a separate process.

  python experiments/accelerator_check.py env OUT_DIR [--dry-run]
  python experiments/accelerator_check.py tests OUT_DIR [--dry-run]
  python experiments/accelerator_check.py benchmark OUT_DIR ARCH DTYPE [--dry-run]
  python experiments/accelerator_check.py train OUT_DIR [--dry-run]
  python experiments/accelerator_check.py summary OUT_DIR

Before anything else is imported, `import tensorflow` (and tensorflow_datasets,
tensorboard, clu, which import it) is made to raise ImportError, and every
attempt is recorded: each stage's JSON says whether TensorFlow got imported
(`tensorflow_imported`, from `sys.modules`) and which imports were refused
(`refused_imports`; an optional import that handles the ImportError is
harmless, but the run shows it). Only the standard library is imported at
module level, so the refusal is in place before jax, flax or pga_jax load.

Every stage writes OUT_DIR/<stage>[_<arch>_<dtype>].json; `summary` gathers
them into OUT_DIR/summary.json. See accelerator_check.sh for the whole run.
"""

from __future__ import annotations

import importlib.abc
import json
import os
import re
import sys
import time

REFUSED = ('tensorflow', 'tensorflow_datasets', 'tensorboard', 'clu')
REFUSED_ATTEMPTS = []


class _RefuseTensorFlow(importlib.abc.MetaPathFinder):
  """A meta path finder that refuses TensorFlow and what imports it."""

  def find_spec(self, fullname, path, target=None):
    del path, target
    if fullname.split('.')[0] in REFUSED:
      REFUSED_ATTEMPTS.append(fullname)
      raise ImportError(
        f'accelerator_check: {fullname} must not be imported on this path '
        '(the accelerator check runs without TensorFlow)'
      )
    return None


def refuse_tensorflow() -> None:
  """From now on, importing TensorFlow, tfds, TensorBoard or clu raises.

  Called by the stages (`main`), not on import: a test process that imports
  this module for its tables must keep its TensorFlow. etils (JAX's
  compilation cache and orbax open paths through it) asks whether
  TensorFlow is installed before it opens any path; `EPATH_USE_TF=false`
  tells it not to ask, so the refusal does not turn every read of the
  compilation cache into an error (and a compile).
  """
  os.environ['EPATH_USE_TF'] = 'false'
  if not any(isinstance(f, _RefuseTensorFlow) for f in sys.meta_path):
    sys.meta_path.insert(0, _RefuseTensorFlow())


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

ARCHS = {  # arch: the experiments/configs file whose settings it is benchmarked with
  'conv_mnist': 'mnist_lpga.py',
  'conv_32': 'cifar10_lpga.py',
  'conv_64': 'celeba_lpga.py',
  'resnet_32': 'cifar10_lpga.py',
}
DTYPES = ('float32', 'bfloat16')

# Datasheet peak FLOP/s per device (dense, no sparsity; boost clock), by a
# regular expression on `device.device_kind`, first match wins. float32 is
# the CUDA-core rate; tf32 the tensor-core rate XLA may use for float32 dots
# and convolutions at default precision (Ampere and newer); None: no such
# unit. Approximate (clocks and board power vary); the measured matmul peak
# in environment.json is the practical reference on the machine itself.
PEAK_FLOPS = (
  (r'H100.*PCIe', {'float32': 51e12, 'tf32': 378e12, 'bfloat16': 756e12}),
  (r'H100|H200|GH200', {'float32': 67e12, 'tf32': 495e12, 'bfloat16': 989e12}),
  (r'A100', {'float32': 19.5e12, 'tf32': 156e12, 'bfloat16': 312e12}),
  (r'A30\b', {'float32': 10.3e12, 'tf32': 82e12, 'bfloat16': 165e12}),
  (r'L40S', {'float32': 91.6e12, 'tf32': 183e12, 'bfloat16': 362e12}),
  (r'\bL4\b', {'float32': 30.3e12, 'tf32': 60e12, 'bfloat16': 121e12}),
  (r'\bA10\b', {'float32': 31.2e12, 'tf32': 62.5e12, 'bfloat16': 125e12}),
  (r'V100', {'float32': 15.7e12, 'tf32': None, 'bfloat16': None}),
  (r'\bT4\b', {'float32': 8.1e12, 'tf32': None, 'bfloat16': None}),
)


def table_peak(device_kind: str):
  """The PEAK_FLOPS entry for a device kind, or None."""
  for pattern, peaks in PEAK_FLOPS:
    if re.search(pattern, device_kind):
      return dict(peaks)
  return None


def tensorflow_report() -> dict:
  return {
    'tensorflow_imported': any(m.split('.')[0] == 'tensorflow' for m in sys.modules),
    'refused_imports': sorted(set(REFUSED_ATTEMPTS)),
  }


def write(out_dir: str, name: str, result: dict) -> str:
  from pga_jax import storage  # pylint: disable=g-import-not-at-top

  path = storage.write_json(
    os.path.join(out_dir, f'{name}.json'), dict(result, **tensorflow_report()), default=str
  )
  print(f'accelerator_check: wrote {path}', flush=True)
  return path


def log(message: str) -> None:
  print(f'accelerator_check: {message}', file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Stages.
# --------------------------------------------------------------------------


def measured_matmul_peak(dtype: str, size: int, repeats: int = 5) -> float:
  """FLOP/s of a size^3 matmul in `dtype` at default precision (median)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32).astype(dtype)
  matmul = jax.jit(jnp.matmul)
  jax.block_until_ready(matmul(a, a))
  samples = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(matmul(a, a))
    samples.append(time.perf_counter() - t0)
  return 2 * size**3 / float(np.median(samples))


def stage_env(out_dir: str, dry_run: bool) -> dict:
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top
  import platform  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  versions = {}
  for package in (
    'jax',
    'jaxlib',
    'flax',
    'optax',
    'chex',
    'orbax-checkpoint',
    'ml_collections',
    'numpy',
    'pytest',
  ):
    try:
      versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      versions[package] = None
  missing = [m for m in ('ml_collections', 'pytest') if importlib.util.find_spec(m) is None]
  if missing:
    raise RuntimeError(
      f'{", ".join(missing)} not importable; pass --wheels DIR with the '
      'wheels of `make accelerator-wheels`'
    )
  device = jax.devices()[0]
  if not dry_run and device.platform == 'cpu':
    raise RuntimeError(
      'JAX found no accelerator (default backend: cpu); check the CUDA '
      'install with `python -c "import jax; print(jax.devices())"` or '
      'pass --dry-run'
    )
  size = 512 if dry_run else 8192
  peaks = {d: measured_matmul_peak(d, size) for d in DTYPES}
  import pga_jax  # pylint: disable=g-import-not-at-top

  return {
    'python': platform.python_version(),
    'versions': versions,
    'pga_jax_file': pga_jax.__file__,
    'backend': jax.default_backend(),
    'platform': device.platform,
    'device_kind': device.device_kind,
    'device_count': jax.device_count(),
    'devices': [str(d) for d in jax.devices()],
    'matmul_size': size,
    'measured_matmul_flops_per_sec': peaks,
    'table_peak_flops_per_sec': table_peak(device.device_kind),
    'dry_run': dry_run,
    'env': {
      k: os.environ.get(k)
      for k in (
        'JAX_PLATFORMS',
        'CUDA_VISIBLE_DEVICES',
        'XLA_FLAGS',
        'PGA_JAX_CACHE_DIR',
        'JAX_DEFAULT_MATMUL_PRECISION',
      )
    },
  }


# Dry run: a few fast tests (CPU, a loaded machine); the real run: the files.
DRY_RUN_TESTS = (
  'tests/test_kernel_choice.py::test_candidates_include_xla_off_cpu_and_first',
  'tests/test_kernel_choice.py::test_every_downsample_form_gives_lax_values_and_gradients'
  '[shape0-phase]',
  'tests/test_fast_paths.py::test_transposed_conv_dispatch_equals_lax_conv_transpose[shape3]',
)
TEST_FILES = (
  'tests/test_kernel_choice.py',
  'tests/test_fast_paths.py',
  'tests/test_layers.py',
  'tests/test_losses.py',
)
# Needs the train loop (pga_jax.train imports clu, which imports TensorFlow).
DESELECTED = ('tests/test_fast_paths.py::test_the_train_loop_compiles_its_step_once',)


class _Outcomes:
  """A pytest plugin recording every test's outcome and duration."""

  def __init__(self):
    self.tests = {}

  def pytest_runtest_logreport(self, report):
    if report.when == 'call' or report.outcome != 'passed':
      entry = self.tests.setdefault(report.nodeid, {'outcome': 'passed', 'seconds': 0.0})
      entry['seconds'] += report.duration
      if report.outcome != 'passed':
        entry['outcome'] = report.outcome
        entry['message'] = str(report.longrepr)[-2000:]


def stage_tests(out_dir: str, dry_run: bool) -> dict:
  import pytest  # pylint: disable=g-import-not-at-top

  selection = list(DRY_RUN_TESTS if dry_run else TEST_FILES)
  args = (
    selection
    + [f'--deselect={d}' for d in DESELECTED]
    + ['-q', '-p', 'no:cacheprovider', f'--rootdir={REPO}', '-c', os.path.join(REPO, 'setup.cfg')]
  )
  outcomes = _Outcomes()
  cwd = os.getcwd()
  os.chdir(REPO)
  try:
    status = int(pytest.main(args, plugins=[outcomes]))
  finally:
    os.chdir(cwd)
  import jax  # pylint: disable=g-import-not-at-top

  counts = {}
  for entry in outcomes.tests.values():
    counts[entry['outcome']] = counts.get(entry['outcome'], 0) + 1
  return {
    'pytest_args': args,
    'exit_status': status,
    'passed': status == 0,
    'counts': counts,
    'tests': outcomes.tests,
    'backend': jax.default_backend(),
    'matmul_precision': os.environ.get('JAX_DEFAULT_MATMUL_PRECISION'),
  }


def stage_benchmark(out_dir: str, arch: str, dtype: str, dry_run: bool) -> dict:
  """`pga benchmark` itself (pga_jax.cli.run), then its JSON with the peaks."""
  from pga_jax import cli  # pylint: disable=g-import-not-at-top

  path = os.path.join(out_dir, f'benchmark_{arch}_{dtype}.json')
  if os.path.exists(path):
    os.remove(path)
  argv = [
    'pga',
    'benchmark',
    f'--config={os.path.join(REPO, "experiments", "configs", ARCHS[arch])}',
    f'--config.arch={arch}',
    f'--config.compute_dtype={dtype}',
    f'--json={path}',
    '--ae_ratio=false',
  ]
  if dry_run:
    argv += ['--config.batch_size=2', '--steps=1', '--warmup=0']
    if arch != 'conv_mnist':
      # Measuring the convolution forms compiles every candidate of every
      # layer once (a minute per architecture on a busy 2-core CPU); the dry
      # run measures conv_mnist's only and runs the others on XLA's own.
      argv += ['--config.conv_impl=xla']
    if arch == 'resnet_32':
      # Its 512-wide 3x3 convolutions at 32x32 make one LPGA step at batch 2
      # several hundred GFLOP: minutes on a CPU. The dry run times its AE step.
      # The config file is LPGA's: keep its latent size and learning rate.
      argv += [
        '--config.method=ae',
        '--config.latent_dim=128',
        '--config.optimizer.learning_rate=0.2',
        '--config.zn_rec=0.0',
      ]
  else:
    argv += ['--config.batch_size=64', '--steps=20', '--warmup=3']
  log(' '.join(argv))
  saved = sys.argv
  sys.argv = argv
  try:
    cli.run()
  except SystemExit as stop:
    if stop.code not in (None, 0):
      raise RuntimeError(f'pga benchmark exited with status {stop.code}') from None
  finally:
    sys.argv = saved
  with open(path) as f:
    result = json.load(f)
  result['command'] = argv
  env_path = os.path.join(out_dir, 'env.json')
  if os.path.exists(env_path):
    with open(env_path) as f:
      env = json.load(f)
    achieved = result.get('flops_per_sec')
    measured = env['measured_matmul_flops_per_sec'].get(dtype)
    result['measured_matmul_flops_per_sec'] = measured
    result['fraction_of_measured_matmul_peak'] = (
      achieved / measured if achieved and measured else None
    )
    table = env.get('table_peak_flops_per_sec') or {}
    for unit in (dtype, 'tf32') if dtype == 'float32' else (dtype,):
      peak = table.get(unit)
      result[f'table_peak_{unit}_flops_per_sec'] = peak
      result[f'fraction_of_table_peak_{unit}'] = achieved / peak if achieved and peak else None
  return result


def write_idx(folder: str, images) -> None:
  """uint8 (N, 28, 28) images as MNIST-format IDX files (train split)."""
  import gzip  # pylint: disable=g-import-not-at-top
  import struct  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  os.makedirs(folder, exist_ok=True)
  n, rows, cols = images.shape
  with gzip.open(os.path.join(folder, 'train-images-idx3-ubyte.gz'), 'wb') as f:
    f.write(struct.pack('>IIII', 0x00000803, n, rows, cols) + images.astype(np.uint8).tobytes())
  with gzip.open(os.path.join(folder, 'train-labels-idx1-ubyte.gz'), 'wb') as f:
    f.write(struct.pack('>II', 0x00000801, n) + (np.arange(n) % 10).astype(np.uint8).tobytes())


def stage_train(out_dir: str, dry_run: bool) -> dict:
  """LPGA on IDX files of synthetic digits, the step as `pga train` builds it
  (benchmark.build_step: sharding, donation, non-finite guard), fed by the
  train loop's input pipeline; without the train loop's logging (clu)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from pga_jax import benchmark, config as config_lib, data  # pylint: disable=g-import-not-at-top
  from pga_jax.data import synthetic  # pylint: disable=g-import-not-at-top

  # Dry run: batch 2 like the dry-run benchmarks, so they share the measured
  # convolution forms (kernel_cache).
  steps, batch, num_images = (10, 2, 256) if dry_run else (2000, 64, 10000)
  idx_dir = os.path.join(out_dir, 'idx')
  write_idx(idx_dir, synthetic.blob_images(num_images, (28, 28, 1))[..., 0])
  config = config_lib.base_config('lpga')
  config.dataset, config.data_dir, config.image_size, config.channels = 'idx', idx_dir, 28, 1
  config.batch_size, config.num_steps, config.init_steps = batch, steps, steps // 4
  images = data.load_split('idx', 'train', idx_dir, image_size=28, channels=1).images
  built = benchmark.build_step(config, at_step=0)
  source = data.BatchSource(images, batch, config.seed, jax.process_index(), jax.process_count())
  history, state, t_first, t0 = [], built.state, None, time.perf_counter()
  for step, local in source.iterate(0, steps):
    state, metrics = built.step_fn(state, built.dp.global_batch(local))
    if step == 0:
      jax.block_until_ready(state)
      t_first = time.perf_counter()
      first_step_s = t_first - t0
    if step % max(steps // 8, 1) == 0 or step == steps - 1:
      history.append({'step': step, **{k: float(v) for k, v in jax.device_get(metrics).items()}})
  jax.block_until_ready(state)
  seconds = time.perf_counter() - t_first
  losses = [h['loss'] for h in history]
  return {
    'method': 'lpga',
    'arch': config.arch,
    'batch_size': batch,
    'steps': steps,
    'init_steps': config.init_steps,
    'data': f'IDX, {num_images} synthetic digits',
    'first_step_s_including_compile': first_step_s,
    'images_per_sec': batch * (steps - 1) / seconds,
    'steps_per_sec': (steps - 1) / seconds,
    'history': history,
    'all_finite': bool(np.all(np.isfinite(losses))),
    'final_step': int(jax.device_get(state.step)),
    'backend': jax.default_backend(),
  }


def stage_summary(out_dir: str) -> dict:
  stages = {}
  for name in sorted(os.listdir(out_dir)):
    if name.endswith('.json') and name != 'summary.json':
      with open(os.path.join(out_dir, name)) as f:
        result = json.load(f)
      stages[name[:-5]] = {
        k: result.get(k)
        for k in (
          'status',
          'error',
          'passed',
          'counts',
          'images_per_sec',
          'flops_per_sec',
          'fraction_of_measured_matmul_peak',
          'fraction_of_table_peak_float32',
          'fraction_of_table_peak_tf32',
          'fraction_of_table_peak_bfloat16',
          'device_kind',
          'tensorflow_imported',
          'refused_imports',
        )
        if k in result
      }
  failed = sorted(n for n, s in stages.items() if s.get('status') != 'ok')
  return {
    'stages': stages,
    'failed_stages': failed,
    'tensorflow_imported_anywhere': any(s.get('tensorflow_imported') for s in stages.values()),
    'passed': not failed and not any(s.get('tensorflow_imported') for s in stages.values()),
  }


def main(argv) -> int:
  refuse_tensorflow()
  if len(argv) < 3 or argv[1] not in ('env', 'tests', 'benchmark', 'train', 'summary'):
    print(__doc__, file=sys.stderr)
    return 2
  stage, out_dir = argv[1], argv[2]
  dry_run = '--dry-run' in argv
  rest = [a for a in argv[3:] if a != '--dry-run']
  os.makedirs(out_dir, exist_ok=True)
  if stage == 'summary':
    result = stage_summary(out_dir)
    write(out_dir, 'summary', result)
    print(json.dumps(result, indent=1, sort_keys=True))
    return 0 if result['passed'] else 1
  name = stage if stage != 'benchmark' else f'benchmark_{rest[0]}_{rest[1]}'
  t0 = time.perf_counter()
  try:
    if stage == 'env':
      result = stage_env(out_dir, dry_run)
    elif stage == 'tests':
      result = stage_tests(out_dir, dry_run)
    elif stage == 'benchmark':
      arch, dtype = rest
      if arch not in ARCHS or dtype not in DTYPES:
        raise ValueError(f'benchmark needs an arch in {sorted(ARCHS)} and a dtype in {DTYPES}')
      result = stage_benchmark(out_dir, arch, dtype, dry_run)
    else:
      result = stage_train(out_dir, dry_run)
    ok = result.get('passed', True)
    result['status'] = 'ok' if ok else 'failed'
  except Exception as err:  # pylint: disable=broad-except  (recorded in the JSON)
    import traceback  # pylint: disable=g-import-not-at-top

    result = {
      'status': 'error',
      'error': f'{type(err).__name__}: {err}',
      'traceback': traceback.format_exc(),
    }
    log(f'{name}: {result["error"]}')
  result['stage_seconds'] = time.perf_counter() - t0
  result['dry_run'] = dry_run
  write(out_dir, name, result)
  return 0 if result['status'] == 'ok' else 1


if __name__ == '__main__':
  sys.exit(main(sys.argv))
