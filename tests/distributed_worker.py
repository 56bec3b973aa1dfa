"""Subprocess worker for tests/test_distributed.py and experiments/scaling_benchmark.py.

The device count must be fixed before JAX initialises its backend, so every
multi-device check runs in a fresh process with the device count in its
environment:

  XLA_FLAGS=--xla_force_host_platform_device_count=8      one process, 8 CPU devices
  JAX_NUM_CPU_DEVICES=2 JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo
                                                          one of several processes

Usage:

  python tests/distributed_worker.py --idx_dir=D JOB [JOB ...]

Each JOB is a JSON object; each prints one line `RESULT=<json>` on stdout:

  {"mode": "train", "workdir": W, "num_steps": K, "out": "P.npz"}
      `train.train_and_evaluate` (resumes if W has a checkpoint), then saves
      the final parameters (host copy) to P.npz.
  {"mode": "restore", "workdir": W, "out": "P.npz"}
      restores W's latest checkpoint into the trainer's target shardings on
      *these* devices (replicated) and saves the parameters.
  {"mode": "copy", "src": W, "dst": W2}       copies a run directory.
  {"mode": "hlo", "out": "H.txt"}             the trainer's jitted step, compiled
                                              for every device, as optimised HLO text.
  {"mode": "bench", "num_steps": K}           K jitted steps after warm-up: examples/s.

--coordinator_address/--num_processes/--process_id first call
`jax.distributed.initialize`, as `pga train` does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

# The config every distributed test trains: VPGA (every PGA term but the
# log-det estimate) with batch norm, at a global batch that 1, 2, 4 and 8
# devices divide, and learning rate 0.01. The reference's 0.1 (and LPGA's
# log-det term at any rate) make the first steps chaotic in float32: on ONE
# device a 1e-7 change of the initial parameters grows to 5e-4 within 6
# steps, so a 1e-5 comparison would test rounding noise, not sharding.
# See docs/scaling.md. Every other field is helpers.TINY_FIELDS' (e.g. init_steps, log_every).
DEFAULTS = dict(
  method='vpga',
  use_bn=True,
  batch_size=16,
  checkpoint_every=1000,
  sample_every=10_000,
  learning_rate=0.01,
)


def test_config(idx_dir: str, **overrides):
  from tests import helpers  # pylint: disable=g-import-not-at-top

  fields = dict(DEFAULTS, **overrides)
  method = fields.pop('method')
  learning_rate = fields.pop('learning_rate')
  config = helpers.tiny_config(idx_dir, method=method, **fields)
  config.optimizer.learning_rate = learning_rate
  return config


def save_params(path: str, params) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  leaves = jax.tree_util.tree_leaves_with_path(params)
  np.savez(path, **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves})


def trainer_parts(config):
  """What `train.train_and_evaluate` builds: dp, model, optimizer, loss, shardings."""
  import jax  # pylint: disable=g-import-not-at-top
  from pga_jax import config as config_lib, sharding, train_step as ts  # pylint: disable=g-import-not-at-top

  dp = sharding.data_parallel()
  config_lib.validate(config, dp.num_devices)
  setup = ts.train_setup(config)
  shardings = jax.tree_util.tree_map(lambda _: dp.replicated, ts.abstract_state(setup))
  target = ts.abstract_state(setup, lambda _: dp.replicated)
  return dict(
    dp=dp,
    loss_fn=setup.loss_fn,
    optimizer=setup.optimizer,
    init_fn=setup.init_fn,
    shardings=shardings,
    target=target,
    coefficients=dp.replicate(setup.coefficients),
  )


def run_job(job: dict, config_overrides: dict, idx_dir: str) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from pga_jax import checkpointing, data, train, train_step as ts  # pylint: disable=g-import-not-at-top

  mode = job['mode']
  result = {'mode': mode}
  if mode == 'copy':
    shutil.copytree(job['src'], job['dst'])
    return result

  config = test_config(idx_dir, **config_overrides, **job.get('config', {}))
  if 'num_steps' in job:
    config.num_steps = job['num_steps']

  if mode == 'train':
    if not job.get('figures', False):
      train.write_figures = lambda *a, **k: {}  # their compiles cost more than the steps
    t0 = time.perf_counter()
    out = train.train_and_evaluate(config, job['workdir'])
    result.update(
      step=out.step,
      loss=out.last_metrics.get('loss'),
      seconds=time.perf_counter() - t0,
      mesh_devices=train.sharding.data_parallel().num_devices,
    )
    if job.get('out'):
      save_params(job['out'], train.local_copy(out.state.params))

  elif mode == 'restore':
    parts = trainer_parts(config)
    manager = checkpointing.checkpoint_manager(job['workdir'], 3)
    state = checkpointing.restore(manager, parts['target'])
    leaves = jax.tree_util.tree_leaves(state)
    result.update(
      step=int(state.step),
      replicated_on_all_devices=all(
        x.sharding.is_fully_replicated and len(x.sharding.device_set) == jax.device_count()
        for x in leaves
      ),
    )
    save_params(job['out'], train.local_copy(state.params))

  elif mode == 'hlo':
    parts = trainer_parts(config)
    step_fn = ts.jit_train_step(
      parts['loss_fn'], parts['optimizer'], parts['shardings'], parts['dp']
    )
    size, _, channels = train.config_lib.image_shape(config)
    images = jax.ShapeDtypeStruct(
      (config.batch_size, size, size, channels), np.float32, sharding=parts['dp'].batch
    )
    compiled = step_fn.lower(parts['target'], images, parts['coefficients']).compile()
    with open(job['out'], 'w') as f:
      f.write(compiled.as_text())
    result.update(
      num_state_leaves=len(jax.tree_util.tree_leaves(parts['target'])),
      global_batch=config.batch_size,
      param_bytes=sum(
        x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(parts['target'].params)
      ),
    )

  elif mode == 'bench':
    parts = trainer_parts(config)
    dp = parts['dp']
    state = jax.jit(parts['init_fn'], out_shardings=parts['shardings'])(
      jax.random.PRNGKey(config.seed)
    )
    step_fn = ts.jit_train_step(parts['loss_fn'], parts['optimizer'], parts['shardings'], dp)
    batches = data.BatchSource(
      train.load_training_images(config),
      config.batch_size,
      config.seed,
      jax.process_index(),
      jax.process_count(),
    )
    warmup, steps = job.get('warmup', 3), job['num_steps']
    host = [batches.batch_at(i) for i in range(warmup + steps)]
    for i in range(warmup):
      state, metrics = step_fn(state, dp.global_batch(host[i]), parts['coefficients'])
    jax.block_until_ready(state)
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
      state, metrics = step_fn(state, dp.global_batch(host[i]), parts['coefficients'])
    jax.block_until_ready((state, metrics))
    seconds = time.perf_counter() - start
    result.update(
      devices=dp.num_devices,
      global_batch=config.batch_size,
      steps_per_sec=steps / seconds,
      examples_per_sec=steps * config.batch_size / seconds,
      examples_per_sec_per_device=steps * config.batch_size / seconds / dp.num_devices,
    )
  else:
    raise ValueError(f'unknown mode {mode!r}')
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('jobs', nargs='+', help='JSON job objects (see the module docstring)')
  parser.add_argument('--idx_dir', required=True, help='folder of IDX training images')
  parser.add_argument('--config', default='{}', help='JSON config overrides for every job')
  parser.add_argument('--coordinator_address')
  parser.add_argument('--num_processes', type=int)
  parser.add_argument('--process_id', type=int)
  args = parser.parse_args()

  import jax  # pylint: disable=g-import-not-at-top

  if args.coordinator_address:
    jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
  overrides = json.loads(args.config)
  for job in args.jobs:
    result = run_job(json.loads(job), overrides, args.idx_dir)
    result.update(
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      device_count=jax.device_count(),
    )
    print('RESULT=' + json.dumps(result), flush=True)


if __name__ == '__main__':
  main()
