"""Eq. (6)'s log-det estimate against the exact log|det dh/dz| over a training run.

The decoder's NLL term of LPGA / LVPGA (Eq. 6 of the paper) needs
log|det dh/dz| of the perceptual generative model h = f o g at the data
latents z = f(x). Training estimates it from K perturbations d_k on the
sphere S(eps) of radius eps = 1e-2 sqrt(H) (the reference's value),

    log|det dh/dz| ~ H/2 * mean_k log(||h(z + d_k) - h(z)||^2 / ||d_k||^2),

an upper bound in expectation as eps -> 0 (Jensen on the concave log), tight
when dh/dz is a scaled orthogonal matrix. This script follows that estimate
and the exact value (jax.jacrev + slogdet, `pga_jax.diagnostics`) over every
checkpoint of a run:

  python experiments/logdet_tracking.py --workdir=runs/study/lpga_seed0 \
      --out=docs/study/logdet.png [--num_images=256] [--ks=1,16] [--json=PATH]

For each checkpoint step it encodes the first --num_images images of the
run's dataset (--split, default test), z = f(x) (the mean), and computes per
image the exact log-det and the Eq. 6 estimate for each K in --ks, with the
same functions the training loss uses (`losses.sample_sphere`,
`sphere_radius`, `log_det_estimates`). The perturbations are drawn once from
--seed (key fold_in(PRNGKey(seed), K)) and reused at every step, so the
curves change only because the model does.

Both quantities use the same h acting on each latent alone: with batch norm,
its statistics come from a fixed reference batch (the first batch_size data
latents of the step), as in `diagnostics.model_exact_log_det`. Without batch
norm (the conv_mnist runs) this h is exactly the one of the training loss.

Writes a JSON (default: --out with .json) with, per step, the mean over
images of each quantity, the mean and std of (estimate - exact), and the
per-image values; a PNG (exact and estimates against the step, and the gap
with a +-1 std band); and prints a table.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
from typing import Dict, List, Sequence

import numpy as np
from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp

from pga_jax import checkpointing, config as config_lib, data, diagnostics, losses, storage
from pga_jax.commands import common
# pylint: enable=g-import-not-at-top,wrong-import-position

LOG_DET_METHODS = ('lpga', 'lvpga')  # the methods whose loss has the Eq. 6 term

flags.DEFINE_string('workdir', None, 'Run directory of a `pga train` run (e.g. an LPGA run).')
flags.DEFINE_string('out', None, 'Output plot (.png).')
flags.DEFINE_string('json', None, 'Output JSON (default: --out with the extension .json).')
flags.DEFINE_integer('num_images', 256, 'Images of --split whose latents are evaluated.')
flags.DEFINE_list('ks', ['1', '16'], 'Numbers K of perturbations of the Eq. 6 estimate.')
flags.DEFINE_string('split', 'test', 'Data split the images come from.')
flags.DEFINE_integer('seed', 0, 'Seed of the sphere perturbations (the same at every step).')
flags.DEFINE_integer(
  'chunk', 64, 'Latents per jitted call (bounds memory; does not change the results).'
)
flags.mark_flags_as_required(['workdir', 'out'])


def checkpoint_steps(workdir: str) -> List[int]:
  """The sorted steps of the checkpoints in `workdir`; WorkdirError if there are none."""
  config = checkpointing.load_config(workdir)
  manager = checkpointing.checkpoint_manager(workdir, config.keep_checkpoints)
  steps = sorted(int(s) for s in manager.all_steps())
  if not steps:
    raise checkpointing.WorkdirError(
      f'no checkpoint in {os.path.join(workdir, checkpointing.CHECKPOINT_DIR)}; '
      'train first with `pga train`.'
    )
  return steps


def load_images(config, num: int, split: str) -> np.ndarray:
  """The first `num` images of `split` of the run's dataset, float32 in [-1, 1]."""
  size, _, channels = config_lib.image_shape(config)
  images = data.load_split(
    config.dataset, split, config.data_dir, image_size=size, channels=channels
  ).images[:num]
  if images.shape[0] < 2:
    raise data.DatasetError(
      f'split {split!r} of {config.dataset!r} has {images.shape[0]} image(s); at least 2 are needed'
    )
  return data.scale_images(images)


def sphere_perturbations(
  seed: int, ks: Sequence[int], num: int, latent_dim: int
) -> Dict[int, jax.Array]:
  """{K: (K, num, H) draws on S(eps)}, eps = sphere_radius(H), one key per K (Eq. 6)."""
  radius = losses.sphere_radius(latent_dim)
  base = jax.random.PRNGKey(seed)
  return {
    k: losses.sample_sphere(jax.random.fold_in(base, k), (k, num, latent_dim), radius) for k in ks
  }


def per_sample_h(model, params, reference_latents: jax.Array):
  """h = f o g on a batch of latents, each acted on alone.

  Batch-norm statistics come from `reference_latents` (and their decodings),
  exactly as in `diagnostics.model_exact_log_det`; without batch norm this is
  `model.encode_decode`, the h of the training loss.
  """
  reference_images = model.decode(params['decoder'], reference_latents)

  def h(latents):
    images = model.decode_with_reference(params['decoder'], latents, reference_latents)
    return model.encode_with_reference(params['encoder'], images, reference_images).mean

  return h


@functools.partial(jax.jit, static_argnums=0)
def _encode(model, encoder_params, images):
  return model.encode(encoder_params, images).mean


@functools.partial(jax.jit, static_argnums=0)
def _chunk_log_dets(model, params, latents, reference, perturbations: tuple):
  """(exact (N,), (Eq. 6 estimate (N,) for each perturbation set)) for one chunk."""
  exact = diagnostics.model_exact_log_det(model, params, latents, reference)
  h = per_sample_h(model, params, reference)
  estimates = tuple(losses.log_det_estimates(h, latents, p) for p in perturbations)
  return exact, estimates


def step_log_dets(
  model,
  params,
  images: np.ndarray,
  perturbations: Dict[int, jax.Array],
  reference_rows: int,
  chunk: int,
) -> Dict[str, np.ndarray]:
  """Per-image exact log|det dh/dz| and Eq. 6 estimates at z = f(x) for one checkpoint.

  Returns {'latents': (N, H), 'exact': (N,), 'k<K>': (N,) for each K}.
  """
  latents = _encode(model, params['encoder'], jnp.asarray(images))
  reference = latents[:reference_rows]
  ks = sorted(perturbations)
  exact, estimates = [], {k: [] for k in ks}
  for start in range(0, latents.shape[0], chunk):
    rows = slice(start, start + chunk)
    e, ests = _chunk_log_dets(
      model, params, latents[rows], reference, tuple(perturbations[k][:, rows] for k in ks)
    )
    exact.append(np.asarray(e, np.float64))
    for k, est in zip(ks, ests):
      estimates[k].append(np.asarray(est, np.float64))
  out = {'latents': np.asarray(latents), 'exact': np.concatenate(exact)}
  out.update({f'k{k}': np.concatenate(estimates[k]) for k in ks})
  return out


def summarize(step: int, values: Dict[str, np.ndarray], ks: Sequence[int]) -> dict:
  """One JSON entry: means over images, and mean/std of (estimate - exact) per K."""
  exact = values['exact']
  entry = {
    'step': int(step),
    'exact_mean': float(np.mean(exact)),
    'exact_std': float(np.std(exact)),
    'estimates': {},
    'per_image': {},
  }
  for k in ks:
    gap = values[f'k{k}'] - exact
    entry['estimates'][str(k)] = {
      'mean': float(np.mean(values[f'k{k}'])),
      'gap_mean': float(np.mean(gap)),
      'gap_std': float(np.std(gap)),
    }
  entry['per_image'] = {
    name: [float(v) for v in values[name]] for name in ['exact'] + [f'k{k}' for k in ks]
  }
  return entry


def diagnostic_model(model):
  """The run's model computing in float32 (a bfloat16 Jacobian is too coarse)."""
  return dataclasses.replace(model, dtype=None) if model.dtype is not None else model


def track(
  workdir: str,
  num_images: int,
  ks: Sequence[int],
  seed: int = 0,
  split: str = 'test',
  chunk: int = 64,
) -> dict:
  """Exact log-det and Eq. 6 estimates at every checkpoint of `workdir` (see module doc)."""
  steps = checkpoint_steps(workdir)
  config = checkpointing.load_config(workdir)
  if config.method not in LOG_DET_METHODS:
    logging.warning(
      '%s is a %s run: its loss has no Eq. 6 term (LPGA/LVPGA do); the '
      'log-dets of its h = f o g are computed all the same.',
      workdir,
      config.method,
    )
  images = load_images(config, num_images, split)
  latent_dim = int(config.latent_dim)
  perturbations = sphere_perturbations(seed, ks, images.shape[0], latent_dim)
  reference_rows = min(int(config.batch_size), images.shape[0])
  entries = []
  for step in steps:
    _, model, params, _ = checkpointing.load_trained(workdir, step)
    values = step_log_dets(
      diagnostic_model(model), params, images, perturbations, reference_rows, chunk
    )
    entries.append(summarize(step, values, ks))
    print(
      f'step {step}: exact {entries[-1]["exact_mean"]:.4f}, '
      + ', '.join(f'K={k} {entries[-1]["estimates"][str(k)]["mean"]:.4f}' for k in ks),
      flush=True,
    )
  return {
    'workdir': os.path.abspath(workdir),
    'method': config.method,
    'latent_dim': latent_dim,
    'use_bn': bool(config.use_bn),
    'dataset': config.dataset,
    'split': split,
    'num_images': int(images.shape[0]),
    'ks': [int(k) for k in ks],
    'eps': losses.sphere_radius(latent_dim),
    'seed': int(seed),
    'reference_rows': reference_rows,
    'steps': entries,
  }


def table(results: dict) -> str:
  """A plain-text table: per step, the exact mean and, per K, the estimate and its gap."""
  ks = [str(k) for k in results['ks']]
  header = ['step', 'exact'] + [c for k in ks for c in (f'eq6 K={k}', f'gap K={k} (mean±std)')]
  rows = []
  for e in results['steps']:
    row = [str(e['step']), f'{e["exact_mean"]:.4f}']
    for k in ks:
      est = e['estimates'][k]
      row += [f'{est["mean"]:.4f}', f'{est["gap_mean"]:+.4f} ± {est["gap_std"]:.4f}']
    rows.append(row)
  widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
  lines = ['  '.join(c.rjust(w) for c, w in zip(r, widths)) for r in [header] + rows]
  return '\n'.join(lines)


def plot(results: dict, out: str) -> str:
  """Top: exact mean log-det and the Eq. 6 estimates against the step; bottom: the gap."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  steps = np.asarray([e['step'] for e in results['steps']])
  fig, (top, bottom) = plt.subplots(
    2, 1, figsize=(7, 6.5), sharex=True, gridspec_kw={'height_ratios': [3, 2]}
  )
  top.plot(
    steps,
    [e['exact_mean'] for e in results['steps']],
    'k-o',
    lw=2,
    label='exact (jacrev + slogdet)',
  )
  for i, k in enumerate(results['ks']):
    color = f'C{i}'
    est = [e['estimates'][str(k)] for e in results['steps']]
    top.plot(steps, [s['mean'] for s in est], '--s', color=color, label=f'Eq. 6, K={k}')
    gap = np.asarray([s['gap_mean'] for s in est])
    std = np.asarray([s['gap_std'] for s in est])
    bottom.plot(steps, gap, '-o', color=color, label=f'K={k}')
    bottom.fill_between(steps, gap - std, gap + std, color=color, alpha=0.2)
  bottom.axhline(0.0, color='k', lw=0.8)
  top.set_ylabel('mean log|det dh/dz|')
  top.legend()
  top.set_title(
    f'{results["method"].upper()}: log|det dh/dz| at z = f(x), '
    f'{results["num_images"]} {results["split"]} images, '
    f'eps = {results["eps"]:.3g}',
    fontsize=10,
  )
  bottom.set_ylabel('estimate - exact\n(mean ± std over images)')
  bottom.set_xlabel('training step')
  bottom.legend()
  for ax in (top, bottom):
    ax.grid(alpha=0.3)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=120)
  plt.close(fig)
  return out


def parse_ks(values: Sequence[str]) -> List[int]:
  try:
    ks = sorted({int(v) for v in values})
  except ValueError:
    ks = []
  if not ks or ks[0] < 1:
    raise ValueError(f'--ks={",".join(values)}: give positive integers, e.g. --ks=1,16')
  return ks


def main(argv):
  del argv
  from pga_jax import cli  # pylint: disable=g-import-not-at-top

  logging.get_absl_handler().addFilter(cli._QuietLibraries())  # pylint: disable=protected-access
  f = flags.FLAGS
  if not f.out.endswith('.png'):
    common.user_error(ValueError(f'--out={f.out!r}: use a .png file name'))
  if f.num_images < 2 or f.chunk < 1:
    common.user_error(ValueError('--num_images must be >= 2 and --chunk >= 1'))
  try:
    ks = parse_ks(f.ks)
  except ValueError as err:
    common.user_error(err)
  try:
    results = track(f.workdir, f.num_images, ks, f.seed, f.split, f.chunk)
  except (checkpointing.WorkdirError, data.DatasetError) as err:
    common.user_error(err)
  json_path = f.json or os.path.splitext(f.out)[0] + '.json'
  storage.write_json(json_path, results, indent=1)
  plot(results, f.out)
  print(table(results))
  if not all(math.isfinite(e['exact_mean']) for e in results['steps']):
    print('note: some exact log-dets are not finite (a singular dh/dz)')
  print(f'wrote {f.out} and {json_path}')


if __name__ == '__main__':
  app.run(main)
