"""Train state and the pure train step, built the one way every caller uses.

`train_step(state, images, coefficients) -> (state, metrics)` is one
function of its inputs, jitted once (`jit_train_step`); the loss
coefficients are an input, so changing them does not recompile. The step's random key is derived from
the run's key and the step number, so a resumed run draws the same numbers as
an uninterrupted one.

`train_setup(config)` gives the model, the loss and the optimizer of a config,
`abstract_state` / `create_train_state` its state: the trainer, `pga
benchmark` and `checkpointing.load_trained` all build their state here. This
module imports neither TensorFlow nor clu (the benchmark and the accelerator
check rely on that).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from pga_jax import config as config_lib
from pga_jax import methods


class TrainState(NamedTuple):
  step: jax.Array  # int32 scalar: number of steps applied
  params: Any  # {'encoder': ..., 'decoder': ...}
  opt_state: Any
  rng: jax.Array  # the run's base key (constant)


def make_optimizer(config) -> optax.GradientTransformation:
  """SGD with momentum (the reference, constant lr) or Adam (the VAE baseline)."""
  opt = config.optimizer
  if opt.name == 'sgd':
    return optax.sgd(opt.learning_rate, momentum=opt.momentum or None)
  if opt.name == 'adam':
    return optax.adam(opt.learning_rate, b1=opt.b1, b2=opt.b2)
  raise ValueError(f'config.optimizer.name: unknown optimizer {opt.name!r}')


def init_train_state(model, optimizer: optax.GradientTransformation, rng: jax.Array) -> TrainState:
  init_rng, run_rng = jax.random.split(rng)
  params = model.init(init_rng)
  return TrainState(
    step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params), rng=run_rng
  )


class TrainSetup(NamedTuple):
  """What a config's training needs besides data: its model, its routed loss
  (`methods.make_loss_fn`), its optimizer, `init_fn(rng) -> TrainState`, and
  the loss coefficients from the config (`methods.coefficients`), the train
  step's third argument."""

  model: Any
  loss_fn: Callable
  optimizer: optax.GradientTransformation
  init_fn: Callable[[jax.Array], TrainState]
  coefficients: Any


def train_setup(config) -> TrainSetup:
  """The model, loss, optimizer and state initialiser of `config`."""
  _, _, channels = config_lib.image_shape(config)
  loss_fn, model, method = methods.make_loss_fn(config, channels)
  optimizer = make_optimizer(config)
  return TrainSetup(
    model,
    loss_fn,
    optimizer,
    functools.partial(init_train_state, model, optimizer),
    methods.coefficients(method, config),
  )


def abstract_state(setup: TrainSetup, sharding_of: Optional[Callable] = None) -> TrainState:
  """The state's shapes and dtypes (no computation); with `sharding_of(leaf)`,
  each leaf carries that sharding (the target of a checkpoint restore)."""
  abstract = jax.eval_shape(setup.init_fn, jax.random.PRNGKey(0))
  if sharding_of is None:
    return abstract
  return jax.tree_util.tree_map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding_of(a)), abstract
  )


def create_train_state(setup: TrainSetup, seed: int, shardings) -> TrainState:
  """A fresh state from the run's seed, laid out as `shardings` (a pytree
  matching the state) says."""
  return jax.jit(setup.init_fn, out_shardings=shardings)(jax.random.PRNGKey(seed))


def jit_train_step(loss_fn: Callable, optimizer: optax.GradientTransformation, state_shardings, dp):
  """The train step as one SPMD program over `dp.mesh` (`sharding.DataParallel`).

  The batch comes in sharded over 'data', the state and the coefficients
  replicated (the state donated);
  XLA inserts the all-reduces for the global-batch means (losses, batch-norm
  statistics, gradients); `dp.traced` lets terms split their batch-sized
  random draws like the batch. tests/test_distributed.py checks the compiled HLO.
  """
  return jax.jit(
    dp.traced(make_train_step(loss_fn, optimizer)),
    in_shardings=(state_shardings, dp.batch, dp.replicated),
    out_shardings=(state_shardings, dp.replicated),
    donate_argnums=0,
  )


def all_finite(tree) -> jax.Array:
  leaves = jax.tree_util.tree_leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def make_train_step(loss_fn: Callable, optimizer: optax.GradientTransformation):
  """Builds `train_step(state, images, coefficients=None) -> (state, metrics)`.

  `coefficients` ({name: scalar}, `methods.coefficients`) weights the loss
  terms as traced values; None bakes the config's values in as constants
  (and a `loss_fn(params, images, rng, step)` without coefficients works).

  A step whose loss or gradients are not finite is not applied (parameters
  and optimizer state stay as they were); `metrics['finite']` is 0 for it,
  and the per-term values say which term went bad.

  Speed: the check reads the global gradient norm (a NaN or Inf anywhere
  makes it non-finite; so does a norm beyond float32's range, ~1.8e19, which
  no usable step has), which the metrics need anyway, and `lax.cond` applies
  the update or keeps the state. Unlike a `where` over every parameter and
  optimizer slot, the kept branch costs nothing and the applied one updates
  the donated buffers in place: 10-15% of the conv_mnist AE step on CPU
  (docs/benchmarks.md).
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def apply_update(operands):
    params, opt_state, grads = operands
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_opt_state

  def keep(operands):
    params, opt_state, _ = operands
    return params, opt_state

  def train_step(state: TrainState, images: jax.Array, coefficients=None):
    step_rng = jax.random.fold_in(state.rng, state.step)
    extra = () if coefficients is None else (coefficients,)
    (loss, metrics), grads = grad_fn(state.params, images, step_rng, state.step, *extra)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_params, new_opt_state = jax.lax.cond(
      finite, apply_update, keep, (state.params, state.opt_state, grads)
    )
    new_state = TrainState(
      step=state.step + 1, params=new_params, opt_state=new_opt_state, rng=state.rng
    )
    metrics = dict(metrics, finite=finite.astype(jnp.float32), grad_norm=grad_norm)
    return new_state, metrics

  return train_step
