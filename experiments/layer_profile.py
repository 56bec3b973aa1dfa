"""Where a conv_mnist step's time goes: each layer's passes against a matmul peak.

For each of conv_mnist's heavy layers (two strided convolutions, two dense
layers, two transposed convolutions) at --batch_size: the forward pass,
forward + weight gradient (dW), forward + input gradient (dX) and forward +
both, each jitted alone, in ms (median of --steps runs) and GFLOP/s (XLA's
FLOP count of the compiled function over the time). The reference point is a
--peak_size^3 float32 matmul: what XLA reaches at best on this machine.

  .venv/bin/python experiments/layer_profile.py --steps=20 --json=docs/benchmarks/conv_mnist_layers.json

Prints the table (docs/benchmarks.md has one) and writes the numbers as JSON
with --json.
"""

from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from pga_jax import benchmark, storage
from pga_jax.commands import common
from pga_jax import conv_forms
# pylint: enable=g-import-not-at-top,wrong-import-position

flags.DEFINE_integer('batch_size', 64, 'Batch size of every layer.')
flags.DEFINE_integer('steps', 20, 'Timed runs of each pass (after two untimed ones).')
flags.DEFINE_integer('peak_size', 2048, 'Size of the square float32 matmul that sets the peak.')
flags.DEFINE_integer('seed', 0, 'Seed of the random inputs and weights.')
flags.DEFINE_string('json', None, 'Write the result as JSON to this path.')

PASSES = ('fwd', 'fwd+dW', 'fwd+dX', 'fwd+both')


def median_ms(fn, args, steps: int) -> float:
  """Median wall time of `fn(*args)` in ms over `steps` runs, after two untimed ones."""
  jax.block_until_ready(fn(*args))
  jax.block_until_ready(fn(*args))
  samples = []
  for _ in range(steps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    samples.append(time.perf_counter() - t0)
  return 1000 * float(np.median(samples))


def xla_flops(fn, args) -> float:
  """XLA's FLOP count of the compiled `fn(*args)` (nan where the backend has none)."""
  cost = fn.lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return float((cost or {}).get('flops', float('nan')))


def conv_mnist_layers(batch_size: int) -> dict:
  """conv_mnist's heavy layers: {name: (function of (x, w), x shape, w shape)}."""
  dn = ('NHWC', 'HWIO', 'NHWC')
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (2, 2), 'SAME', dimension_numbers=dn)
  b = batch_size
  return {
    'enc conv 1->64, 28->14': (conv, (b, 28, 28, 1), (5, 5, 1, 64)),
    'enc conv 64->128, 14->7': (conv, (b, 14, 14, 64), (5, 5, 64, 128)),
    'enc dense 6272->1024': (jnp.matmul, (b, 6272), (6272, 1024)),
    'dec dense 1024->6272': (jnp.matmul, (b, 1024), (1024, 6272)),
    'dec upconv 128->64, 7->14': (conv_forms.upsample_conv, (b, 7, 7, 128), (5, 5, 128, 64)),
    'dec upconv 64->1, 14->28': (conv_forms.upsample_conv, (b, 14, 14, 64), (5, 5, 64, 1)),
  }


def layer_profile(
  batch_size: int = 64, steps: int = 20, peak_size: int = 2048, seed: int = 0
) -> dict:
  """{'layers': {name: {pass: {ms, gflops, gflops_per_sec}}}, the matmul peak, settings}."""
  rng = jax.random.PRNGKey(seed)
  a = jax.random.normal(rng, (peak_size, peak_size))
  peak_ms = median_ms(jax.jit(jnp.matmul), (a, a), max(3, steps // 4))
  result = {
    'batch_size': batch_size,
    'steps': steps,
    'peak_matmul_gflops_per_sec': 2 * peak_size**3 / peak_ms / 1e6,
    'layers': {},
  }
  for name, (fn, x_shape, w_shape) in conv_mnist_layers(batch_size).items():
    x = jax.random.normal(jax.random.fold_in(rng, 1), x_shape)
    w = 0.05 * jax.random.normal(jax.random.fold_in(rng, 2), w_shape)
    # A nonlinear scalar of the output, so that no gradient pass is trivial.
    loss = lambda x_, w_, fn=fn: jnp.sum(jnp.sin(fn(x_, w_)))
    compiled = {
      'fwd': jax.jit(fn),
      'fwd+dW': jax.jit(jax.grad(loss, argnums=1)),
      'fwd+dX': jax.jit(jax.grad(loss, argnums=0)),
      'fwd+both': jax.jit(jax.grad(loss, argnums=(0, 1))),
    }
    row = {}
    for kind, fn_pass in compiled.items():
      ms = median_ms(fn_pass, (x, w), steps)
      flops = xla_flops(fn_pass, (x, w))
      row[kind] = {'ms': ms, 'gflops': flops / 1e9, 'gflops_per_sec': flops / ms / 1e6}
    result['layers'][name] = row
  result['environment'] = benchmark.environment()
  return result


def format_layer_profile(r: dict) -> str:
  lines = [
    f'conv_mnist layers, batch {r["batch_size"]}, median of {r["steps"]} runs: '
    f'ms (GFLOP/s); peak: float32 matmul {r["peak_matmul_gflops_per_sec"]:.0f} GFLOP/s',
    f'  {"layer":28s}' + ''.join(f'{k:>18s}' for k in PASSES),
  ]
  for name, row in r['layers'].items():
    lines.append(
      f'  {name:28s}'
      + ''.join(f'{row[k]["ms"]:9.2f} ({row[k]["gflops_per_sec"]:5.0f})' for k in PASSES)
    )
  return '\n'.join(lines)


def main(argv):
  del argv
  f = flags.FLAGS
  if f.json:
    common.check_writable('json', f.json)
  result = layer_profile(f.batch_size, steps=f.steps, peak_size=f.peak_size, seed=f.seed)
  print(format_layer_profile(result))
  if f.json:
    print(f'layer_profile: wrote {storage.write_json(f.json, result)}')


if __name__ == '__main__':
  app.run(main)
