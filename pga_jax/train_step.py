"""Train state and the pure train step.

`train_step(state, images) -> (state, metrics)` is one function of its
inputs, jitted once by the trainer. The step's random key is derived from the
run's key and the step number, so a resumed run draws the same numbers as an
uninterrupted one.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax


class TrainState(NamedTuple):
  step: jax.Array        # int32 scalar: number of steps applied
  params: Any            # {'encoder': ..., 'decoder': ...}
  opt_state: Any
  rng: jax.Array         # the run's base key (constant)


def make_optimizer(config) -> optax.GradientTransformation:
  """SGD with momentum (the reference, constant lr) or Adam (the VAE baseline)."""
  opt = config.optimizer
  if opt.name == 'sgd':
    return optax.sgd(opt.learning_rate, momentum=opt.momentum or None)
  if opt.name == 'adam':
    return optax.adam(opt.learning_rate, b1=opt.b1, b2=opt.b2)
  raise ValueError(f'config.optimizer.name: unknown optimizer {opt.name!r}')


def init_train_state(model, optimizer: optax.GradientTransformation,
                     rng: jax.Array) -> TrainState:
  init_rng, run_rng = jax.random.split(rng)
  params = model.init(init_rng)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params), rng=run_rng)


def all_finite(tree) -> jax.Array:
  leaves = jax.tree_util.tree_leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def make_train_step(loss_fn: Callable, optimizer: optax.GradientTransformation):
  """Builds `train_step(state, images) -> (state, metrics)`.

  A step whose loss or gradients are not finite is not applied (parameters
  and optimizer state stay as they were); `metrics['finite']` is 0 for it,
  and the per-term values say which term went bad.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state: TrainState, images: jax.Array):
    step_rng = jax.random.fold_in(state.rng, state.step)
    (loss, metrics), grads = grad_fn(state.params, images, step_rng, state.step)
    updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss) & all_finite(grads)
    keep = lambda new, old: jnp.where(finite, new, old)
    new_state = TrainState(
        step=state.step + 1,
        params=jax.tree_util.tree_map(keep, new_params, state.params),
        opt_state=jax.tree_util.tree_map(keep, new_opt_state, state.opt_state),
        rng=state.rng)
    metrics = dict(metrics, finite=finite.astype(jnp.float32),
                   grad_norm=optax.global_norm(grads))
    return new_state, metrics

  return train_step
