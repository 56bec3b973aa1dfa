"""Speed of the real train step: `pga benchmark` (see docs/benchmarks.md).

`benchmark_config(config)` builds the train step exactly as `pga train` does
(method, architecture, optimizer, non-finite guard, sharding, donated state),
feeds it synthetic images of the config's shape and reports

- compile_s: trace + lower + compile of the step;
- the step time over `steps` steps after `warmup` steps: median, 10th/90th
  percentile and median absolute deviation, and images/s (batch / median);
- pipelined_images_per_sec: half as many steps dispatched back to back with
  one synchronisation at the end, as the train loop runs them (with at least
  2 timed steps; null with one, where there is nothing back to back);
- flops_per_step from XLA's cost analysis of the compiled step, and the
  achieved FLOP/s (flops / median step time);
- peak memory: XLA's buffer assignment for the step (arguments + outputs +
  temporaries - aliased) and the process's peak resident set size;
- ae_step_ratio: this step's median time over the AE step's of the same
  architecture, batch, latent size, optimizer and dtype, timed in alternating
  blocks in the same process, so load from other processes cancels out.

The step is timed at `config.init_steps + 1` (after the warm-up, when every term
is on) unless `at_step` says otherwise: the steady state of a run.

`peer_command` interleaves an external command (experiments/torch_peer.py:
the reference's conv_mnist steps in plain PyTorch) with our timing blocks:
each round runs the command, then a block of our steps, and the ratio of
images/s is taken per round. On a shared machine only such same-session
ratios are meaningful.

What is timed outside a train step (each conv_mnist layer against a matmul
peak, the decoder's convolution forms, throughput over simulated devices)
lives in experiments/ (layer_profile.py, decoder_benchmark.py,
scaling_benchmark.py).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from pga_jax import config as config_lib, conv_forms
from pga_jax import data, sharding
from pga_jax.data import synthetic
from pga_jax import train_step as ts

# Fields every `benchmark_config` result has (tests/test_benchmark.py).
RESULT_FIELDS = (
  'method',
  'arch',
  'batch_size',
  'images_per_sec',
  'step_ms_median',
  'compile_s',
  'flops_per_step',
  'ae_step_ratio',
)


# --------------------------------------------------------------------------
# Timing helpers.
# --------------------------------------------------------------------------


def summarize(seconds) -> dict:
  """Median, 10th/90th percentiles and median absolute deviation, in ms."""
  ms = 1e3 * np.asarray(seconds, np.float64)
  median = float(np.median(ms))
  return {
    'step_ms_median': median,
    'step_ms_p10': float(np.percentile(ms, 10)),
    'step_ms_p90': float(np.percentile(ms, 90)),
    'step_ms_mad': float(np.median(np.abs(ms - median))),
    'step_ms_min': float(ms.min()),
    'num_timed_steps': int(ms.size),
  }


def _block(tree):
  return jax.block_until_ready(tree)


# --------------------------------------------------------------------------
# The train step as `pga train` builds it.
# --------------------------------------------------------------------------


@dataclasses.dataclass
class BuiltStep:
  """A compiled train step with its state and a batch on the device(s)."""

  config: object
  step_fn: Callable  # jitted, state donated
  state: ts.TrainState
  batch: jax.Array
  compile_s: float
  flops: Optional[float]
  bytes_accessed: Optional[float]
  memory: dict
  dp: sharding.DataParallel

  def run(self, n: int, sync_each: bool = True) -> list:
    """Runs n steps; returns each step's wall time (sync_each) or [total]."""
    times = []
    if sync_each:
      for _ in range(n):
        t0 = time.perf_counter()
        self.state, metrics = self.step_fn(self.state, self.batch)
        _block(self.state)
        times.append(time.perf_counter() - t0)
      self.last_metrics = metrics
      return times
    t0 = time.perf_counter()
    for _ in range(n):
      self.state, metrics = self.step_fn(self.state, self.batch)
    _block(self.state)
    self.last_metrics = metrics
    return [time.perf_counter() - t0]


def _memory_stats(compiled) -> dict:
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  (not every backend has it)
    return {}
  if m is None:
    return {}
  args, out = int(m.argument_size_in_bytes), int(m.output_size_in_bytes)
  temp, alias = int(m.temp_size_in_bytes), int(m.alias_size_in_bytes)
  return {
    'peak_memory_bytes': args + out + temp - alias,
    'argument_bytes': args,
    'output_bytes': out,
    'temp_bytes': temp,
    'alias_bytes': alias,
  }


def _cost(compiled) -> tuple:
  try:
    ca = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None, None
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else {}
  ca = ca or {}
  flops = ca.get('flops')
  return (
    float(flops) if flops is not None else None,
    float(ca['bytes accessed']) if 'bytes accessed' in ca else None,
  )


def build_step(config, at_step: Optional[int] = None, seed: int = 0) -> BuiltStep:
  """Compiles `config`'s train step; the state starts at `at_step`
  (default `config.init_steps + 1`: after the warm-up)."""
  dp = sharding.data_parallel()
  config_lib.validate(config, dp.num_devices)
  shape = config_lib.image_shape(config)
  setup = ts.train_setup(config)
  state_shardings = jax.tree_util.tree_map(lambda _: dp.replicated, ts.abstract_state(setup))
  state = ts.create_train_state(setup, config.seed, state_shardings)
  start = int(config.init_steps) + 1 if at_step is None else int(at_step)
  state = state._replace(step=jax.device_put(jnp.asarray(start, jnp.int32), dp.replicated))
  # A batch as the train loop gets it: the data pipeline over (synthetic) uint8 images.
  source = data.BatchSource(
    synthetic.blob_images(config.batch_size, shape, seed),
    config.batch_size,
    seed,
    jax.process_index(),
    jax.process_count(),
  )
  batch = dp.global_batch(source.batch_at(0))
  jitted = ts.jit_train_step(setup.loss_fn, setup.optimizer, state_shardings, dp)
  coefficients = dp.replicate(setup.coefficients)
  t0 = time.perf_counter()
  compiled = jitted.lower(state, batch, coefficients).compile()

  def step_fn(state, batch):
    return jitted(state, batch, coefficients)

  compile_s = time.perf_counter() - t0
  flops, bytes_accessed = _cost(compiled)
  return BuiltStep(
    config, step_fn, state, batch, compile_s, flops, bytes_accessed, _memory_stats(compiled), dp
  )


def ae_config(config):
  """The AE step of the same architecture, batch, latent size, optimizer and dtype
  (no coefficient left on: a nonzero one would add its term to the AE)."""
  ae = copy.deepcopy(config)
  ae.method = 'ae'
  ae.extra_terms = ()
  for name in config_lib.COEFFICIENTS:
    ae[name] = 0.0
  return ae


def input_pipeline_ms(
  config, dp: sharding.DataParallel, num_batches: int = 50, num_images: int = 8192, seed: int = 0
) -> float:
  """Milliseconds per batch of the train loop's input path alone: `BatchSource`
  (shuffled gather, uint8 -> float32 in [-1, 1], prefetch thread) and
  `dp.global_batch` (host -> device), over random uint8 images."""
  shape = config_lib.image_shape(config)
  images = np.random.RandomState(seed).randint(0, 256, (num_images,) + shape, np.uint8)
  source = data.BatchSource(
    images, config.batch_size, seed, jax.process_index(), jax.process_count()
  )
  batch = None
  t0 = time.perf_counter()
  for _, local in source.iterate(0, num_batches):
    batch = dp.global_batch(local)
  _block(batch)
  return 1e3 * (time.perf_counter() - t0) / num_batches


# --------------------------------------------------------------------------
# An external peer, run between our timing blocks.
# --------------------------------------------------------------------------


def run_peer(
  command: str, method: str, batch_size: int, steps: int, timeout: float = 1800
) -> float:
  """Runs `command` (placeholders {method}, {batch}, {steps}); it must print a
  JSON object {method: images_per_sec} as its last line. Returns that number."""
  argv = shlex.split(command.format(method=method, batch=batch_size, steps=steps))
  out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
  if out.returncode != 0:
    raise RuntimeError(f'peer command {argv} failed ({out.returncode}): {out.stderr[-2000:]}')
  lines = [l for l in out.stdout.strip().splitlines() if l.strip()]
  if not lines:
    raise RuntimeError(f'peer command {argv} printed nothing')
  result = json.loads(lines[-1])
  if method not in result:
    raise RuntimeError(f'peer command {argv} printed no {method!r}: {lines[-1]}')
  return float(result[method])


# --------------------------------------------------------------------------
# The benchmark.
# --------------------------------------------------------------------------


def environment() -> dict:
  """The software, devices and load the numbers were measured with."""
  try:
    load = os.getloadavg()
  except OSError:
    load = (float('nan'),) * 3
  return {
    'jax_version': jax.__version__,
    'backend': jax.default_backend(),
    'device_count': jax.device_count(),
    'device_kind': jax.devices()[0].device_kind,
    'cpu_count': os.cpu_count(),
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
    'python': platform.python_version(),
    'load_average_1m': load[0],
  }


def benchmark_config(
  config,
  steps: int = 20,
  warmup: int = 3,
  at_step: Optional[int] = None,
  ae_ratio: bool = True,
  block: int = 5,
  peer_command: Optional[str] = None,
  peer_rounds: int = 3,
  peer_steps: int = 10,
  log: Callable[[str], None] = lambda s: None,
) -> dict:
  """Benchmarks `config`'s train step; returns a JSON-able dict (RESULT_FIELDS and more)."""
  if steps < 1 or warmup < 0 or block < 1:
    raise ValueError(f'need steps >= 1, warmup >= 0, block >= 1; got {steps}, {warmup}, {block}')
  env_start = environment()
  built = build_step(config, at_step)
  log(f'{config.method}/{config.arch}: compiled in {built.compile_s:.1f} s')
  ae = None
  if ae_ratio and config.method != 'ae':
    ae = build_step(ae_config(config), at_step)
    log(f'ae/{config.arch}: compiled in {ae.compile_s:.1f} s')
  for b in (built, ae):
    if b is not None and warmup:
      b.run(warmup)

  times, ae_times, peer_ratios, peer_ips = [], [], [], []
  rounds = peer_rounds if peer_command else 1
  per_round = max(1, -(-steps // rounds))
  for r in range(rounds):
    if peer_command:
      peer_ips.append(run_peer(peer_command, config.method, config.batch_size, peer_steps))
      log(f'round {r}: peer {peer_ips[-1]:.1f} images/s')
    round_times = []
    while len(round_times) < per_round and len(times) + len(round_times) < steps:
      n = min(block, per_round - len(round_times), steps - len(times) - len(round_times))
      round_times += built.run(n)
      if ae is not None:
        ae_times += ae.run(n)
    times += round_times
    if peer_command:
      ours = config.batch_size / float(np.median(round_times))
      peer_ratios.append(ours / peer_ips[-1])
      log(f'round {r}: ours {ours:.1f} images/s, ratio {peer_ratios[-1]:.2f}')

  stats = summarize(times)
  median_s = stats['step_ms_median'] / 1e3
  input_ms = input_pipeline_ms(config, built.dp)
  pipelined = built.run(steps // 2, sync_each=False)[0] if steps >= 2 else None
  finite = float(jax.device_get(built.last_metrics['finite']))
  result = {
    'method': config.method,
    'arch': config.arch,
    'batch_size': int(config.batch_size),
    'latent_dim': int(config.latent_dim),
    'use_bn': bool(config.use_bn),
    'compute_dtype': config.compute_dtype,
    'optimizer': config.optimizer.name,
    'at_step': int(config.init_steps) + 1 if at_step is None else int(at_step),
    'warmup_steps': warmup,
    'images_per_sec': config.batch_size / median_s,
    'pipelined_images_per_sec': (
      None if pipelined is None else config.batch_size * (steps // 2) / pipelined
    ),
    'compile_s': built.compile_s,
    # The loop prefetches batches in a thread: it starves the step only if
    # this is not well below step_ms_median.
    'input_pipeline_ms_per_batch': input_ms,
    'flops_per_step': built.flops,
    'flops_per_sec': built.flops / median_s if built.flops else None,
    'bytes_accessed_per_step': built.bytes_accessed,
    'last_step_finite': finite == 1.0,
    # The convolution forms the step runs (conv_impl 'auto': measured per
    # layer shape on this device, pga_jax.conv_forms).
    'conv_impl': config.conv_impl,
    'conv_forms': conv_forms.choices_made(),
    'max_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    **stats,
    **built.memory,
  }
  if ae is not None:
    ae_stats = summarize(ae_times)
    result['ae_step_ms_median'] = ae_stats['step_ms_median']
    result['ae_step_ratio'] = stats['step_ms_median'] / ae_stats['step_ms_median']
    result['ae_flops_per_step'] = ae.flops
  else:
    result['ae_step_ms_median'] = stats['step_ms_median']
    result['ae_step_ratio'] = 1.0 if config.method == 'ae' else None
  if peer_command:
    result['peer_command'] = peer_command
    result['peer_images_per_sec'] = peer_ips
    result['peer_ratio_per_round'] = peer_ratios
    result['peer_ratio_median'] = float(np.median(peer_ratios))
  env_end = environment()
  result['environment'] = dict(env_start, load_average_1m_end=env_end['load_average_1m'])
  return result


def format_result(r: dict) -> str:
  """A few human-readable lines of a `benchmark_config` result."""
  gf = lambda x: 'n/a' if x is None else f'{x / 1e9:.2f}'
  lines = [
    f'{r["method"]} {r["arch"]} batch {r["batch_size"]} ({r["compute_dtype"]}, at step '
    f'{r["at_step"]}): {r["images_per_sec"]:.1f} images/s',
    f'  step {r["step_ms_median"]:.1f} ms median (p10 {r["step_ms_p10"]:.1f}, p90 '
    f'{r["step_ms_p90"]:.1f}, MAD {r["step_ms_mad"]:.1f}; {r["num_timed_steps"]} steps); '
    + (
      'pipelined n/a (one timed step)'
      if r['pipelined_images_per_sec'] is None
      else f'pipelined {r["pipelined_images_per_sec"]:.1f} images/s'
    ),
    f'  input pipeline {r["input_pipeline_ms_per_batch"]:.2f} ms/batch (prefetched)',
    f'  compile {r["compile_s"]:.1f} s; {gf(r["flops_per_step"])} GFLOP/step, '
    f'{gf(r["flops_per_sec"])} GFLOP/s achieved',
  ]
  if 'peak_memory_bytes' in r:
    lines.append(
      f'  memory: step buffers {r["peak_memory_bytes"] / 2**20:.0f} MiB '
      f'(temporaries {r["temp_bytes"] / 2**20:.0f} MiB), process peak RSS '
      f'{r["max_rss_bytes"] / 2**20:.0f} MiB'
    )
  if r.get('ae_step_ratio') is not None:
    lines.append(
      f'  vs AE step of the same arch: {r["ae_step_ratio"]:.2f}x '
      f'(AE {r["ae_step_ms_median"]:.1f} ms)'
    )
  if 'peer_ratio_median' in r:
    lines.append(
      f'  vs peer: {r["peer_ratio_median"]:.2f}x its images/s (per round: '
      + ', '.join(f'{x:.2f}' for x in r['peer_ratio_per_round'])
      + ')'
    )
  if not r['last_step_finite']:
    lines.append(
      '  WARNING: the last step was not finite (skipped by the guard); '
      'timings may not be representative'
    )
  return '\n'.join(lines)


if __name__ == '__main__':  # pragma: no cover
  sys.exit('use `pga benchmark`')
