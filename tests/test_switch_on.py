"""LPGA's switch-on after a short warm-up, on digit-like images made here.

During the warm-up only L_r trains, and the data codes drift far from the
prior (conv_mnist: ||f(x)|| ~ 30 after 500 steps, against ~3.5 for N(0, I) in 12
dimensions; docs/switch_on.md). When the reference switches every term on
at once, L_lr,N's encoder gradient (prior draws through an h never trained
near the origin) jumps ~40x; SGD with momentum overshoots, the codes oscillate and explode
within a few steps, the decoder saturates and Eq. 6's difference becomes
exactly zero (experiments/switch_on.py logs it step by step; docs/switch_on.md).
`warmup_ramp_steps` raises the coefficients over R steps instead.

The same warmed-up state is continued both ways, so the switch alone differs.
The network is `conv_tiny` (conv_mnist's layers at 1/8 of its widths): the
reference's switch ruins its L_r too, and its warm-up is cheap (600 AE steps
take ~5 s on one CPU, against ~145 s for 400 of conv_mnist). The warm-up is 600 steps at batch 32 (seed 0: the reference's
switch then raises L_r 12.9-fold at the second step, the ramp at most
1.2-fold; after 300 steps the switch raises it only 4.7-fold;
docs/switch_on.md has the table for both networks).

The warm-up is trained as the AE: before the switch LPGA's other terms have
weight exactly 0, so its steps are the AE's (checked over the first steps,
to float rounding) at a fraction of the cost.
"""

import jax
import numpy as np
import pytest

from experiments import digits
from experiments.configs import quickstart
from pga_jax import config as config_lib, data, methods, train_step as ts

WARMUP = 600
AFTER = 30
BATCH = 32


def continue_run(config, state, source, first_step, num_steps, stop_when=None):
  """Trains `num_steps` steps from `state`; with `stop_when`, stops after the
  first step whose metrics it accepts."""
  loss_fn, _, _ = methods.make_loss_fn(config, channels=1)
  step_fn = jax.jit(ts.make_train_step(loss_fn, ts.make_optimizer(config)))
  history = []
  for step in range(first_step, first_step + num_steps):
    state, metrics = step_fn(state, source.batch_at(step))
    history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
    if stop_when is not None and stop_when(history[-1]):
      break
  return state, history


def setup(arch='conv_tiny'):
  """LPGA's quickstart config on `arch` at batch BATCH, its batches of 4,096
  rendered digits, its initial state, and the AE config its warm-up equals."""
  images, _ = digits.make_digits(4096, seed=0)
  config = quickstart.get_config()
  config.arch = arch
  config.batch_size = BATCH
  config.init_steps = WARMUP
  source = data.BatchSource(images[..., None], BATCH, config.seed, 0, 1)
  _, model, _ = methods.make_loss_fn(config, channels=1)
  optimizer = ts.make_optimizer(config)
  start = ts.init_train_state(model, optimizer, jax.random.PRNGKey(config.seed))
  # Steps 0..init_steps train L_r alone whatever the ramp: as the AE does.
  ae = config.copy_and_resolve_references()
  ae.method = 'ae'
  for name in config_lib.COEFFICIENTS:
    ae[name] = 0.0
  return config, source, start, ae


def after_switch(config, state, source, warmup, ramp, stop_when=None):
  """AFTER steps of `config` from a state warmed up for `warmup` steps, its
  terms switched on at once (`ramp` 0, the reference) or over `ramp` steps."""
  switched = config.copy_and_resolve_references()
  switched.init_steps, switched.warmup_ramp_steps = warmup, ramp
  return continue_run(switched, state, source, warmup + 1, AFTER, stop_when)[1]


@pytest.mark.slow
def test_the_reference_switch_diverges_and_a_ramp_trains_through():
  config, source, start, ae = setup()
  lpga_first, _ = continue_run(config, start, source, 0, 5)
  ae_first, _ = continue_run(ae, start, source, 0, 5)
  for a, b in zip(jax.tree_util.tree_leaves(lpga_first), jax.tree_util.tree_leaves(ae_first)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  state, warm = continue_run(ae, start, source, 0, WARMUP + 1)
  rec_before = np.mean([m['rec'] for m in warm[-20:]])

  def broken(m):
    """The reference's switch: a step goes non-finite, or L_r is ruined."""
    return not m['finite'] or not np.isfinite(m['rec']) or m['rec'] > 5 * rec_before

  # Without the ramp, training stops at the first broken step: the rest
  # cannot change the outcome.
  outcomes = {
    ramp: after_switch(config, state, source, WARMUP, ramp, broken if ramp == 0 else None)
    for ramp in (0, 500)
  }

  reference = outcomes[0]
  assert any(broken(m) for m in reference), [round(m['rec'], 4) for m in reference]
  # With the ramp: every step finite, L_r within 50% of its pre-switch level.
  ramp = outcomes[500]
  assert all(m['finite'] == 1.0 for m in ramp)
  assert max(m['rec'] for m in ramp) < 1.5 * rec_before, (rec_before, [m['rec'] for m in ramp])


def print_table(arch, warmups):
  """For each warm-up length: the most L_r rose over AFTER steps, as a multiple
  of its level before the switch, with the reference's switch and with a
  500-step ramp (the table of docs/switch_on.md)."""
  config, source, state, ae = setup(arch)
  done = 0
  for warmup in warmups:
    state, warm = continue_run(ae, state, source, done, warmup + 1 - done)
    done = warmup + 1
    rec_before = np.mean([m['rec'] for m in warm[-20:]])
    row = [f'warm-up {warmup}:']
    for ramp in (0, 500):
      history = after_switch(config, state, source, warmup, ramp)
      ratios = [m['rec'] / rec_before for m in history]
      first = next((i + 1 for i, r in enumerate(ratios) if not r <= 5), None)
      finite = all(m['finite'] == 1.0 for m in history)
      row.append(
        f'ramp {ramp}: most {max(ratios):.2f}x, first >5x at step {first}, all finite {finite}'
      )
    print('  '.join(row), flush=True)


if __name__ == '__main__':
  # python -m tests.test_switch_on [ARCH [WARMUP,WARMUP,...]]
  import sys  # pylint: disable=g-import-not-at-top

  print_table(
    sys.argv[1] if len(sys.argv) > 1 else 'conv_tiny',
    [int(w) for w in (sys.argv[2] if len(sys.argv) > 2 else '200,300,400,500,600').split(',')],
  )
