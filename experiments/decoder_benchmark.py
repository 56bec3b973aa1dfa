"""A decoder alone: `lax.conv_transpose` with JAX's autodiff against our UpConv forms.

Builds the --arch decoder twice on the same weights: with conv_impl 'xla'
(`lax.conv_transpose` and its autodiff, what `flax.linen.ConvTranspose`
computes) and with --conv_impl (default 'phase': every transposed convolution
as per-phase stride-1 convolutions; see `pga_jax.models.layers`). Times the
forward pass and forward + backward (the VJP with respect to the parameters
and the latents, with a random cotangent: what a train step needs), both
variants in alternating rounds, and reports the medians, the speed-ups and
the largest difference of their outputs and gradients.

  .venv/bin/python experiments/decoder_benchmark.py --arch=conv_32 --batch_size=64 --json=dec.json
"""

from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from pga_jax import benchmark, storage
from pga_jax.commands import common
from pga_jax.models import AutoEncoder
# pylint: enable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string('arch', 'conv_mnist', 'Architecture whose decoder is timed.')
flags.DEFINE_integer('batch_size', 64, 'Batch size.')
flags.DEFINE_integer('latent_dim', 12, 'Latent size.')
flags.DEFINE_string('conv_impl', 'phase', "The form timed against 'xla' (a conv_impl value).")
flags.DEFINE_integer('steps', 20, 'Timed rounds.')
flags.DEFINE_integer('warmup', 2, 'Untimed rounds after compilation.')
flags.DEFINE_string('json', None, 'Write the result as JSON to this path.')

VARIANTS = ('conv_transpose', 'upconv')
KINDS = ('fwd', 'fwd_bwd')


def decoder_benchmark(
  arch: str = 'conv_mnist',
  batch_size: int = 64,
  latent_dim: int = 12,
  conv_impl: str = 'phase',
  steps: int = 20,
  warmup: int = 2,
  dtype=None,
  seed: int = 0,
) -> dict:
  """Medians (ms) of forward and forward+backward for 'xla' and `conv_impl`, same weights."""
  channels = 1 if arch == 'conv_mnist' else 3
  rng = jax.random.PRNGKey(seed)
  latents = jax.random.normal(jax.random.fold_in(rng, 1), (batch_size, latent_dim))
  calls = {}
  for name, impl in zip(VARIANTS, ('xla', conv_impl)):
    model = AutoEncoder(arch, latent_dim, channels, conv_impl=impl, dtype=dtype)
    params = model.init(rng)['decoder']  # same names and shapes, same key: same weights
    cotangent = jax.random.normal(jax.random.fold_in(rng, 2), (batch_size,) + model.image_shape)

    def forward(p, z, model=model):
      return model.decode(p, z)

    def forward_backward(p, z, ct, model=model):
      out, vjp = jax.vjp(model.decode, p, z)
      return out, vjp(ct.astype(out.dtype))

    calls[name, 'fwd'] = (jax.jit(forward), (params, latents))
    calls[name, 'fwd_bwd'] = (jax.jit(forward_backward), (params, latents, cotangent))
  outputs = {}
  for key, (fn, args) in calls.items():
    outputs[key] = jax.block_until_ready(fn(*args))
    for _ in range(warmup):
      jax.block_until_ready(fn(*args))
  times = {key: [] for key in calls}
  for _ in range(steps):
    for key, (fn, args) in calls.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[key].append(time.perf_counter() - t0)
  leaves = [jax.tree_util.tree_leaves(outputs[name, 'fwd_bwd']) for name in VARIANTS]
  result = {
    'arch': arch,
    'batch_size': batch_size,
    'latent_dim': latent_dim,
    'conv_impl': conv_impl,
    'dtype': str(jnp.dtype(dtype or jnp.float32)),
    'steps': steps,
    'max_abs_diff_outputs_and_grads': max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(*leaves)),
  }
  for (name, kind), samples in times.items():
    s = benchmark.summarize(samples)
    for stat in ('median', 'p10', 'p90'):
      result[f'{name}_{kind}_ms_{stat}'] = s[f'step_ms_{stat}']
  for kind in KINDS:
    result[f'{kind}_speedup'] = (
      result[f'conv_transpose_{kind}_ms_median'] / result[f'upconv_{kind}_ms_median']
    )
  result['environment'] = benchmark.environment()
  return result


def format_decoder_result(r: dict) -> str:
  lines = [
    f'decoder {r["arch"]} batch {r["batch_size"]} ({r["dtype"]}), median of {r["steps"]} (p10-p90):'
  ]
  for kind, label in (('fwd', 'forward'), ('fwd_bwd', 'forward+backward')):
    spread = lambda name, kind=kind: (
      f'{r[f"{name}_{kind}_ms_median"]:8.1f} ms '
      f'({r[f"{name}_{kind}_ms_p10"]:.1f}-{r[f"{name}_{kind}_ms_p90"]:.1f})'
    )
    lines.append(
      f'  {label:17s} lax.conv_transpose {spread("conv_transpose")}   '
      f'UpConv {r["conv_impl"]} {spread("upconv")}   {r[f"{kind}_speedup"]:.2f}x'
    )
  lines.append(
    f'  max |difference| of outputs and gradients: {r["max_abs_diff_outputs_and_grads"]:.2e}'
  )
  return '\n'.join(lines)


def main(argv):
  del argv
  f = flags.FLAGS
  if f.json:
    common.check_writable('json', f.json)
  try:
    result = decoder_benchmark(
      f.arch, f.batch_size, f.latent_dim, f.conv_impl, steps=f.steps, warmup=f.warmup
    )
  except ValueError as err:  # an unknown arch or conv_impl
    common.user_error(err)
  print(format_decoder_result(result))
  if f.json:
    print(f'decoder_benchmark: wrote {storage.write_json(f.json, result)}')


if __name__ == '__main__':
  app.run(main)
