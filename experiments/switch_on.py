"""What happens when LPGA's terms switch on after the warm-up, step by step.

Trains a config (by default the quickstart's LPGA on Fashion-MNIST) with the
library's own train step and, in a window of steps around `init_steps`,
logs per step what the loss alone does not show:

- every term's value and the total loss;
- the gradient norm of each network (encoder loss w.r.t. the encoder,
  decoder loss w.r.t. the decoder, as the step applies them), in all and
  per weighted term (`gn_encoder_TERM`, `gn_decoder_TERM`);
- the smallest and median ||h(z + d) - h(z)||^2 over the batch, with the
  perturbations d the step itself draws for Eq. 6, and how many are exactly 0;
- the fraction of the decoder's tanh outputs that are saturated (|x| > 0.999)
  for the data codes and for prior draws;
- the norms of the data codes z = f(x) (mean and max over the batch) and of
  the prior draws' h(z).

  python experiments/switch_on.py --init_steps=100 --after=300 --out=runs/switch_on/w100
  python experiments/switch_on.py --override=optimizer.learning_rate=0.2 --seed=1 ...

Writes OUT/steps.jsonl (one line per step of the window, plus every
`--every`-th step outside it) and OUT/switch_on.png. The run stops at the
first step whose loss or gradient is not finite (that step is logged) or
after `init_steps + after` steps.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pga_jax import config as config_lib, data, losses, methods  # pylint: disable=g-import-not-at-top,wrong-import-position
from pga_jax import train, train_step as ts  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments.configs import quickstart  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_integer('init_steps', 500, 'Warm-up length.')
flags.DEFINE_integer('before', 20, 'Steps before the switch-on to log every step.')
flags.DEFINE_integer('after', 200, 'Steps after the switch-on to train (all logged).')
flags.DEFINE_integer('every', 50, 'Logging interval outside the window.')
flags.DEFINE_integer('seed', 0, 'Run seed.')
flags.DEFINE_string('method', 'lpga', 'Method.')
flags.DEFINE_string('dataset', 'fashion_mnist', 'Dataset.')
flags.DEFINE_string('data_dir', None, 'Data directory (idx / folder datasets).')
flags.DEFINE_multi_string('override', [], 'FIELD=VALUE config overrides (Python literals).')
flags.DEFINE_string('out', 'runs/switch_on', 'Output folder.')
flags.DEFINE_list(
  'compare',
  [],
  'Instead of training: LABEL=FOLDER pairs of earlier runs to '
  'plot side by side (L_r, code norms, encoder gradient norm) into --out.',
)

SATURATED = 0.999


def _apply_override(config, text: str) -> None:
  import ast  # pylint: disable=g-import-not-at-top

  field, _, value = text.partition('=')
  try:
    parsed = ast.literal_eval(value)
  except (ValueError, SyntaxError):
    parsed = value
  node = config
  *parents, leaf = field.split('.')
  for name in parents:
    node = node[name]
  node[leaf] = parsed


def make_config(argv_flags):
  config = quickstart.get_config()
  if argv_flags.method != config.method:
    config = config_lib.base_config(argv_flags.method)
    config.arch = 'conv_mnist'
  config.dataset = argv_flags.dataset
  config.data_dir = argv_flags.data_dir
  config.seed = argv_flags.seed
  config.init_steps = argv_flags.init_steps
  for text in argv_flags.override:
    _apply_override(config, text)
  config.num_steps = config.init_steps + argv_flags.after
  return config


def make_diagnostics(loss_fn, model, method, config):
  """`diagnose(params, images, step_rng, step) -> dict` of the quantities above."""
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  radius = losses.sphere_radius(model.latent_dim)

  def term_grads(term, params, images, step_rng, step):
    alone = dataclasses.replace(method, terms=(term,))
    return jax.grad(
      lambda p: methods.method_loss(alone, model, p, images, step_rng, step, config, fast=False)[0]
    )(params)

  def diagnose(params, images, step_rng, step):
    (_, metrics), grads = grad_fn(params, images, step_rng, step)
    out = {k: v for k, v in metrics.items()}
    out['grad_norm_encoder'] = optax.global_norm(grads['encoder'])
    out['grad_norm_decoder'] = optax.global_norm(grads['decoder'])
    out['warmup_weight'] = methods.warmup_weight(
      step, int(config.init_steps), int(config.warmup_ramp_steps)
    )
    for term in methods.active_terms(method, config):
      g = term_grads(term, params, images, step_rng, step)
      out[f'gn_encoder_{term.name}'] = optax.global_norm(g['encoder'])
      out[f'gn_decoder_{term.name}'] = optax.global_norm(g['decoder'])
    z = model.encode(params['encoder'], images).mean
    norms = jnp.linalg.norm(z, axis=-1)
    out['code_norm_mean'], out['code_norm_max'] = jnp.mean(norms), jnp.max(norms)
    out['code_rms'] = jnp.sqrt(jnp.mean(jnp.square(z)))
    x_data = model.decode(params['decoder'], z)
    out['saturated_data'] = jnp.mean(jnp.abs(x_data) > SATURATED)
    prior = jax.random.normal(methods.term_rng(step_rng, 'zn_rec'), z.shape)
    x_prior = model.decode(params['decoder'], prior)
    out['saturated_prior'] = jnp.mean(jnp.abs(x_prior) > SATURATED)
    h_prior = model.encode(params['encoder'], x_prior).mean
    out['h_prior_norm_mean'] = jnp.mean(jnp.linalg.norm(h_prior, axis=-1))
    # Eq. 6's perturbations as the step draws them (K = 1).
    d = losses.sample_sphere(methods.term_rng(step_rng, 'nll_dec'), (1,) + z.shape, radius)[0]
    h = lambda latents: (
      model.encode(params['encoder'], model.decode(params['decoder'], latents)).mean
    )
    h_center, h_perturbed = h(z), h(z + d)
    diff = h_perturbed - h_center
    out_sq = jnp.sum(jnp.square(diff), axis=-1)
    out['out_sq_min'] = jnp.min(out_sq)
    out['out_sq_median'] = jnp.median(out_sq)
    out['out_sq_zero'] = jnp.sum(out_sq == 0)
    # The same difference with the float32 spacing of h's values: how many
    # units in the last place separate h(z + d) from h(z).
    ulp = jnp.spacing(jnp.max(jnp.abs(h_center), axis=-1))
    out['out_ulps_min'] = jnp.min(jnp.max(jnp.abs(diff), axis=-1) / ulp)
    out['h_center_norm_mean'] = jnp.mean(jnp.linalg.norm(h_center, axis=-1))
    out['log_det_min'] = 0.5 * model.latent_dim * jnp.min(jnp.log(out_sq / radius**2))
    return out

  return jax.jit(diagnose)


def plot(rows: list, init_steps: int, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  panels = [
    ('terms', ['rec', 'zn_rec', 'nll_enc', 'nll_dec'], 'symlog'),
    ('gradient norms', ['grad_norm_encoder', 'grad_norm_decoder'], 'log'),
    (
      'encoder gradient norm per weighted term',
      [k for k in rows[-1] if k.startswith('gn_encoder_')],
      'log',
    ),
    ('||h(z+d) - h(z)||^2', ['out_sq_min', 'out_sq_median'], 'log'),
    ('saturated tanh outputs', ['saturated_data', 'saturated_prior'], 'linear'),
    ('norms', ['code_norm_mean', 'code_norm_max', 'h_prior_norm_mean'], 'log'),
  ]
  fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.4 * len(panels)), sharex=True)
  steps = [r['step'] for r in rows]
  for ax, (title, keys, scale) in zip(axes, panels):
    for key in keys:
      if key in rows[0]:
        values = [r.get(key, np.nan) for r in rows]
        ax.plot(steps, values, '.-', ms=2, lw=0.8, label=key)
    ax.axvline(init_steps, color='k', lw=0.5, ls=':')
    ax.set_yscale(scale)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
  axes[-1].set_xlabel('step')
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def plot_comparison(runs: dict, path: str) -> None:
  """L_r, mean code norm and encoder gradient norm of several runs against step."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  panels = [
    ('rec', 'L_r', 'log'),
    ('code_norm_mean', 'mean ||f(x)||', 'log'),
    ('grad_norm_encoder', 'encoder gradient norm', 'log'),
  ]
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2))
  for ax, (key, title, scale) in zip(axes, panels):
    for label, rows in runs.items():
      ax.plot([r['step'] for r in rows], [r[key] for r in rows], '.-', ms=2, lw=0.8, label=label)
    ax.set_title(title, fontsize=9)
    ax.set_yscale(scale)
    ax.set_xlabel('step')
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)


def read_rows(folder: str) -> list:
  with open(os.path.join(folder, 'steps.jsonl')) as f:
    return [json.loads(line) for line in f if line.strip()]


def main(argv):
  del argv
  args = flags.FLAGS
  if args.compare:
    runs = {}
    for pair in args.compare:
      label, _, folder = pair.partition('=')
      runs[label] = [r for r in read_rows(folder) if all(np.isfinite(list(r.values())))]
    plot_comparison(runs, args.out)
    print('wrote', args.out)
    return
  config = make_config(args)
  config_lib.validate(config)
  os.makedirs(args.out, exist_ok=True)
  images = train.load_training_images(config)
  batches = data.BatchSource(images, config.batch_size, config.seed, 0, 1)
  _, _, channels = config_lib.image_shape(config)
  loss_fn, model, method = methods.make_loss_fn(config, channels)
  optimizer = ts.make_optimizer(config)
  state = ts.init_train_state(model, optimizer, jax.random.PRNGKey(config.seed))
  step_fn = jax.jit(ts.make_train_step(loss_fn, optimizer))
  diagnose = make_diagnostics(loss_fn, model, method, config)
  window = range(config.init_steps - args.before, config.num_steps + 1)
  rows = []
  with open(os.path.join(args.out, 'steps.jsonl'), 'w') as log:
    for step_index, batch in batches.iterate(0, config.num_steps):
      x = jnp.asarray(batch)
      if step_index in window or step_index % args.every == 0:
        step_rng = jax.random.fold_in(state.rng, state.step)
        row = {k: float(v) for k, v in diagnose(state.params, x, step_rng, state.step).items()}
        row['step'] = step_index
        rows.append(row)
        log.write(json.dumps(row) + '\n')
        log.flush()
        print(
          ' '.join(
            f'{k}={v:.4g}'
            for k, v in row.items()
            if k
            in (
              'step',
              'loss',
              'rec',
              'nll_dec',
              'grad_norm_encoder',
              'grad_norm_decoder',
              'out_sq_min',
              'out_ulps_min',
              'saturated_data',
              'code_norm_max',
            )
          ),
          flush=True,
        )
      state, metrics = step_fn(state, x)
      if not float(metrics['finite']):
        print(f'non-finite at step {step_index}', flush=True)
        break
  plot(rows, config.init_steps, os.path.join(args.out, 'switch_on.png'))
  print('wrote', os.path.join(args.out, 'steps.jsonl'))


if __name__ == '__main__':
  app.run(main)
