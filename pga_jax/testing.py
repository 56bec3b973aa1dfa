"""Checks for a loss term or a method, for researchers' tests (pytest, chex).

A term is `fn(model, params, images, rng, config) -> scalar` with the side of
the model its gradient may reach (`methods.Term.updates`); a method is a
weighted sum of terms (`methods.Method`). Three checks cover what goes wrong
when one is added:

* `check_routing(method, config)`: each term's gradient reaches exactly the
  parameters it may update (encoder, decoder or both), and the method's
  gradient is the sum of its terms' weighted gradients. A term whose
  coefficient is 0 in `config` is checked too: routing is a property of the
  term, so it is checked on the unweighted term.
* `check_gradients(fn, params)`: the gradient of a scalar function of a
  parameter pytree against central finite differences, along random
  directions, in float64. Networks with ReLU-like kinks make one fixed step
  unreliable (a step that crosses a kink sees the other slope), so several
  steps are tried, from large to small, and the check passes when one of them
  agrees within `rtol`. It applies to a loss whose training gradient is its
  true gradient: an equation of `losses`, a term without stop-gradients
  inside, or a method all of whose terms update both networks (the VAE, an
  autoencoder with added terms). PGA's methods are not such losses: a term
  routed to one network, and Eq. 6 and vrec, which hold the encoder constant
  inside h, train each network on its own loss, so the gradient of their sum
  is not what training uses; check their routing with `check_routing`.
* `check_fast_path(config)`: the training loss (terms sharing their network
  passes, `passes.SharedPasses`) equals the plain sum of terms, in value,
  per-term metrics and gradient.

Each raises AssertionError naming the term (or parameter direction) that
failed, and returns what it measured. Example (see tests/test_testing.py and
experiments/extending/):

    from pga_jax import config as config_lib, methods, testing

    config = testing.small_config('lpga', latent_dim=4)
    testing.check_routing(methods.LPGA.with_terms(my_term), config)
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pga_jax import config as config_lib, methods

DEFAULT_STEPS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)


def small_config(method: str, latent_dim: int = 4, **fields):
  """`config.base_config(method)` for quick checks: conv_mnist, a small latent,
  no warm-up (every term on), `fields` set on top."""
  config = config_lib.base_config(method)
  config.latent_dim = latent_dim
  config.init_steps = 0
  for name, value in fields.items():
    *parents, leaf = name.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def _norm(tree) -> float:
  return float(optax.global_norm(tree))


def assert_trees_close(a_tree, b_tree, rtol: float, atol: float, what: str = 'differ') -> None:
  """Raises AssertionError naming the first leaf of two gradient pytrees that
  differ; float32 sums in another order, so the tolerance also scales with
  each leaf's largest entry."""
  for (path, a), b in zip(
    jax.tree_util.tree_leaves_with_path(a_tree), jax.tree_util.tree_leaves(b_tree)
  ):
    if not np.allclose(a, b, rtol=rtol, atol=atol + rtol * float(np.max(np.abs(a)))):
      raise AssertionError(
        f'the gradient at {jax.tree_util.keystr(path)} {what} '
        f'(max difference {float(np.max(np.abs(a - b))):.3g})'
      )


def _setup(config, batch: int, channels: int, seed: int, method=None):
  method = method or methods.build_method(config)
  model = methods.build_model(config, method, channels)
  params = model.init(jax.random.PRNGKey(seed))
  size = config_lib.image_shape(config)[0]  # folder/idx: config.image_size
  images = jax.random.uniform(
    jax.random.PRNGKey(seed + 1), (batch, size, size, channels), minval=-1.0, maxval=1.0
  )
  return method, model, params, images


def check_routing(
  method: methods.Method,
  config,
  *,
  batch: int = 8,
  channels: int = 1,
  seed: int = 0,
  step: int = 10,
  rtol: float = 1e-4,
  atol: float = 1e-6,
) -> Dict[str, Dict[str, float]]:
  """Checks which parameters each term of `method` reaches, and that the
  method's loss gradient is the sum of its active terms' weighted gradients.

  Each gradient is computed under `jax.jit`, as the train step computes it,
  so a term must be traceable. Returns {term name: {'encoder': gradient
  norm, 'decoder': gradient norm}}.
  """
  method, model, params, images = _setup(config, batch, channels, seed, method)
  rng, step = jax.random.PRNGKey(seed + 2), jnp.asarray(step)
  norms = {}
  summed = jax.tree_util.tree_map(jnp.zeros_like, params)
  active = {t.name for t in methods.active_terms(method, config)}
  for term in method.terms:

    def value(p, term=term):
      routed = methods.route(p, term.updates)
      return term.fn(model, routed, images, methods.term_rng(rng, term.name), config)

    grads = jax.jit(jax.grad(value))(params)
    norms[term.name] = {side: _norm(grads[side]) for side in ('encoder', 'decoder')}
    reaches = {side for side, n in norms[term.name].items() if n > 0}
    allowed = {'encoder': {'encoder'}, 'decoder': {'decoder'}, 'both': {'encoder', 'decoder'}}
    if reaches != allowed[term.updates]:
      raise AssertionError(
        f'term {term.name!r} (updates={term.updates!r}) has gradients on '
        f'{sorted(reaches) or "no parameters"} (norms {norms[term.name]}); it must reach '
        f'exactly {sorted(allowed[term.updates])}'
      )
    if term.name in active:
      weight = methods.term_coefficient(term, config, step)
      summed = jax.tree_util.tree_map(lambda s, g, w=weight: s + w * g, summed, grads)
  full = jax.jit(
    jax.grad(
      lambda p: methods.method_loss(method, model, p, images, rng, step, config, fast=False)[0]
    )
  )(params)
  assert_trees_close(full, summed, rtol, atol, "is not the sum of its terms' weighted gradients")
  return norms


def check_gradients(
  fn: Callable,
  params,
  *,
  num_directions: int = 3,
  steps: Sequence[float] = DEFAULT_STEPS,
  rtol: float = 1e-4,
  seed: int = 0,
) -> list:
  """Checks `jax.grad(fn)(params)` against central finite differences along
  `num_directions` random unit directions, in float64.

  fn: a scalar function of the parameter pytree (close over the data). It is
    evaluated (and differentiated, under `jax.jit`) with 64-bit floats
    enabled and params cast to float64, so it must not force float32 itself.
  steps: finite-difference steps tried per direction, from large to small;
    the check passes for a direction when some step agrees within `rtol`
    (relative to the larger of the two derivatives, or 1e-8).

  Returns [(analytic, best numeric, step used)] per direction.
  """
  with jax.enable_x64():
    params64 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), params)
    leaves, treedef = jax.tree_util.tree_flatten(params64)
    grad = jax.jit(jax.grad(fn))(params64)

    # Two compiled programs do all the work, whatever the number of
    # directions and steps (op by op, each small array operation would be a
    # program of its own, and the check would spend its time compiling them).
    @jax.jit
    def direction_and_slope(key, grad):
      """A random unit direction in parameter space, and grad . direction."""
      parts = [
        jax.random.normal(k, x.shape, jnp.float64)
        for k, x in zip(jax.random.split(key, len(leaves)), leaves)
      ]
      scale = jnp.sqrt(sum(jnp.sum(p * p) for p in parts))
      direction = jax.tree_util.tree_unflatten(treedef, [p / scale for p in parts])
      slope = sum(
        jnp.sum(g * d)
        for g, d in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(direction))
      )
      return direction, slope

    @jax.jit
    def ends(params, direction, h):
      """fn at params + h * direction and at params - h * direction."""
      plus = jax.tree_util.tree_map(lambda p, d: p + h * d, params, direction)
      minus = jax.tree_util.tree_map(lambda p, d: p - h * d, params, direction)
      return fn(plus), fn(minus)

    keys = jax.random.split(jax.random.PRNGKey(seed), num_directions)
    results = []
    for i, key in enumerate(keys):
      direction, slope = direction_and_slope(key, grad)
      analytic = float(slope)
      tried = []
      for h in steps:
        f_plus, f_minus = ends(params64, direction, jnp.asarray(h, jnp.float64))
        numeric = (float(f_plus) - float(f_minus)) / (2 * h)
        error = abs(numeric - analytic) / max(abs(numeric), abs(analytic), 1e-8)
        tried.append((error, numeric, h))
        if error <= rtol:
          break
      error, numeric, h = min(tried)
      if error > rtol:
        raise AssertionError(
          f'direction {i}: gradient . direction = {analytic:.10g}, finite differences give '
          + ', '.join(f'{n:.10g} (step {s:g})' for _, n, s in tried)
          + f'; best relative error {error:.3g} > rtol {rtol:g}'
        )
      results.append((analytic, numeric, h))
  return results


def method_loss_fn(config, *, batch: int = 8, channels: int = 1, seed: int = 0, step: int = 10):
  """(params, loss(params)) of the config's method on random images: the plain
  term sum, for `check_gradients` where the method's training gradient is the
  gradient of that sum (see the module docstring). Build the config with
  conv_impl='xla' to differentiate XLA's own convolutions."""
  method, model, params, images = _setup(config, batch, channels, seed)
  rng = jax.random.PRNGKey(seed + 2)

  def loss(p):
    x = images.astype(jax.tree_util.tree_leaves(p)[0].dtype)
    return methods.method_loss(method, model, p, x, rng, jnp.asarray(step), config, fast=False)[0]

  return params, loss


def check_fast_path(
  config,
  *,
  batch: int = 8,
  channels: int = 1,
  seed: int = 0,
  step: int = 7,
  rtol: float = 1e-4,
  atol: float = 1e-6,
  method: Optional[methods.Method] = None,
) -> dict:
  """Checks that the training loss (shared passes) equals the plain term sum:
  total, every term's metric and every gradient. Returns the plain metrics."""
  method, model, params, images = _setup(config, batch, channels, seed, method)
  rng, step = jax.random.PRNGKey(seed + 2), jnp.asarray(step)
  results = {}
  for fast in (True, False):

    def loss(p, fast=fast):
      return methods.method_loss(method, model, p, images, rng, step, config, fast=fast)

    results[fast] = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  ((_, fast_metrics), fast_grads), ((_, plain_metrics), plain_grads) = results[True], results[False]
  if set(fast_metrics) != set(plain_metrics):
    raise AssertionError(f'metrics differ: {sorted(fast_metrics)} vs {sorted(plain_metrics)}')
  for name in plain_metrics:
    if not np.allclose(fast_metrics[name], plain_metrics[name], rtol=rtol, atol=atol):
      raise AssertionError(
        f'{name}: {float(fast_metrics[name])} with shared passes, '
        f'{float(plain_metrics[name])} plain'
      )
  assert_trees_close(fast_grads, plain_grads, rtol, atol, 'differs between shared passes and plain')
  return {name: float(v) for name, v in plain_metrics.items()}
