"""Methods (AE, VAE, LPGA, VPGA, LVPGA) as weighted sums of named terms.

A method is data: a tuple of `Term`s, each naming its function, the config
field holding its coefficient, which parameters it may update and whether
the warm-up switches it off. `method_loss` is the one place that turns that
into a scalar:

    L = sum_i  c_i(step) * term_i(route(params, updates_i), ...)

Routing is by `stop_gradient` on whole parameter subtrees, so the gradient
of L w.r.t. the encoder is the gradient of the reference's *encoder loss*
and w.r.t. the decoder that of its *decoder loss* (one optimizer, two
gradient sets), e.g. for LPGA (Eq. 7):

    encoder loss = L_r + a*L_lr,N + b*L_lr,H + g*L_nll^phi
    decoder loss = L_r + g*L_nll^theta
"""
from __future__ import annotations

import dataclasses
import importlib
import zlib
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from pga_jax import fused, terms
from pga_jax.models import AutoEncoder

TermFn = Callable[..., jax.Array]
UPDATES = ('encoder', 'decoder', 'both')


@dataclasses.dataclass(frozen=True)
class Term:
  """One named loss term of a method.

  name: metric name. fn: `fn(model, params, images, rng, config) -> scalar`.
  updates: 'encoder', 'decoder' or 'both': the parameters its gradient reaches.
  coeff: config field holding its coefficient; None means 1.
  warmup: if True, its coefficient is 0 for the first `config.init_steps` steps.
  """
  name: str
  fn: TermFn
  updates: str
  coeff: Optional[str] = None
  warmup: bool = True

  def __post_init__(self):
    if self.updates not in UPDATES:
      raise ValueError(f'term {self.name!r}: updates must be one of {UPDATES}, '
                       f'got {self.updates!r}')


@dataclasses.dataclass(frozen=True)
class Method:
  """A method: its terms, whether the encoder has a log-variance head, and
  optionally `fused`, a faster implementation of some of its terms that
  share passes through the networks (see `pga_jax.fused`); `method_loss`
  uses it unless asked for the plain term sum."""
  name: str
  terms: tuple
  needs_logvar: bool
  fused: Optional[Callable] = None

  def with_terms(self, *extra: Term) -> 'Method':
    """This method plus extra terms (how a researcher adds a loss term)."""
    names = [t.name for t in self.terms + tuple(extra)]
    if len(set(names)) != len(names):
      raise ValueError(f'duplicate term names in {names}')
    return dataclasses.replace(self, terms=self.terms + tuple(extra))


_REC = Term('rec', terms.reconstruction, 'both', warmup=False)
_ZN_REC = Term('zn_rec', terms.latent_reconstruction_prior, 'encoder', 'zn_rec')
_ZH_REC = Term('zh_rec', terms.latent_reconstruction_data, 'encoder', 'zh_rec')
_NLL_ENC = Term('nll_enc', terms.nll_encoder, 'encoder', 'nll')
_NLL_DEC = Term('nll_dec', terms.nll_decoder, 'decoder', 'nll')
_VREC = Term('vrec', terms.variational_reconstruction, 'both', 'vrec')
_VKLD = Term('vkld', terms.kl_divergence, 'encoder', 'vkld')

AE = Method('ae', (_REC,), needs_logvar=False)
VAE = Method('vae', (Term('rec', terms.vae_reconstruction, 'both', warmup=False),
                     Term('kl', terms.kl_divergence, 'encoder', 'beta', warmup=False)),
             needs_logvar=True)
LPGA = Method('lpga', (_REC, _ZN_REC, _ZH_REC, _NLL_ENC, _NLL_DEC), needs_logvar=False,
              fused=fused.lpga_reconstruction_and_nll)
# "No warm-up in VPGA" (reference).
VPGA = Method('vpga', tuple(dataclasses.replace(t, warmup=False)
                            for t in (_REC, _ZN_REC, _ZH_REC, _VREC, _VKLD)),
              needs_logvar=True, fused=fused.variational_reconstruction_shared)
LVPGA = Method('lvpga', (_REC, _ZN_REC, _ZH_REC, _VREC, _VKLD, _NLL_ENC,
                         Term('nll_dec', terms.nll_decoder_gaussian, 'decoder', 'nll')),
               needs_logvar=True, fused=fused.variational_reconstruction_shared)

METHODS = {m.name: m for m in (AE, VAE, LPGA, VPGA, LVPGA)}


def route(params: dict, updates: str) -> dict:
  """Stops gradients on the parameter subtrees a term must not update."""
  sg = jax.lax.stop_gradient
  return {'encoder': params['encoder'] if updates in ('encoder', 'both') else sg(params['encoder']),
          'decoder': params['decoder'] if updates in ('decoder', 'both') else sg(params['decoder'])}


def warmup_active(step: jax.Array, init_steps: int) -> jax.Array:
  """1.0 once `step >= init_steps`, else 0.0: the reference's warm-up switch."""
  return (jnp.asarray(step) >= init_steps).astype(jnp.float32)


def term_coefficient(term: Term, config, step: jax.Array) -> jax.Array:
  base = 1.0 if term.coeff is None else float(config[term.coeff])
  if term.warmup:
    return base * warmup_active(step, int(config.init_steps))
  return jnp.asarray(base, jnp.float32)


def term_rng(rng: jax.Array, name: str) -> jax.Array:
  """Each term's own key, stable when terms are added or removed."""
  return jax.random.fold_in(rng, zlib.crc32(name.encode()) & 0x7FFFFFFF)


class SharedEncodings:
  """The model, with `encode` evaluated once per distinct (encoder params, images).

  Within one loss evaluation several terms encode the data batch with the
  same, live encoder parameters (`route` hands every term that may update
  the encoder the very same arrays): L_r, L_nll^phi, the VAE's KL, vrec's
  sigma. Evaluated once, their cotangents add up before one backward pass
  through the encoder instead of one pass per term; the values and
  gradients are those of the separate calls (tests/test_fast_paths.py).
  Calls with stop-gradient parameters (terms that must not update the
  encoder) get new arrays from `route`, so they are never merged with live
  ones; XLA still shares their forward computation.

  Keys are object identities; the cache holds its keys' objects, so an
  identity cannot be reused while it lives (one `method_loss` call).
  """

  def __init__(self, model: AutoEncoder):
    self._model = model
    self._cache = {}

  def __getattr__(self, name):
    return getattr(self._model, name)

  def encode(self, encoder_params, images, stat_rows=None):
    leaves = jax.tree_util.tree_leaves(encoder_params)
    key = (tuple(map(id, leaves)), id(images), stat_rows)
    if key not in self._cache:
      self._cache[key] = ((leaves, images),
                          self._model.encode(encoder_params, images, stat_rows))
    return self._cache[key][1]


def active_terms(method: Method, config) -> tuple:
  """The terms that are computed: those whose coefficient is not exactly 0."""
  return tuple(t for t in method.terms
               if t.coeff is None or float(config[t.coeff]) != 0.0)


def method_loss(method: Method, model: AutoEncoder, params: dict, images: jax.Array,
                rng: jax.Array, step: jax.Array, config, fast: bool = True):
  """The method's total loss and a dict of metrics (each term's unweighted value).

  Terms whose configured coefficient is exactly 0 are not computed at all.

  fast=True (the default, what training uses) shares the encoder pass over
  the data batch between terms (`SharedEncodings`) and computes the terms
  that `method.fused` covers together (`pga_jax.fused`: L_r and Eq. 6 / vrec
  share the decoder pass over the data encoding); fast=False evaluates every
  term on its own. Values and gradients are the same up to float32 rounding
  (tests/test_fast_paths.py).

  The warm-up stays a traced 0/1 weight: a `lax.cond` that skipped the
  switched-off terms' backward passes would make the warm-up step nearly
  as cheap as the AE step, but XLA:CPU runs convolutions inside conditional
  branches without its YNNPACK kernels, 5-10x slower (docs/benchmarks.md).
  """
  shared = SharedEncodings(model) if fast else model
  total = jnp.zeros((), jnp.float32)
  metrics = {}
  active = active_terms(method, config)
  fused_values = {}
  if fast and method.fused is not None:
    fused_values = method.fused(shared, params, images, lambda name: term_rng(rng, name),
                                config, frozenset(t.name for t in active))
  for term in active:
    if term.name in fused_values:
      value = fused_values[term.name]
    else:
      value = term.fn(shared, route(params, term.updates), images,
                      term_rng(rng, term.name), config)
    weight = term_coefficient(term, config, step)
    # `where`, not a product, so a term that is switched off cannot turn the
    # loss into NaN (0 * inf) during the warm-up.
    total = total + jnp.where(weight > 0, weight * value, 0.0)
    metrics[term.name] = value
  metrics['loss'] = total
  return total, metrics


def _import_function(path: str) -> TermFn:
  module_name, _, attr = path.partition(':')
  if not attr:
    raise ValueError(f"extra term function {path!r} must be 'package.module:function'")
  try:
    return getattr(importlib.import_module(module_name), attr)
  except (ImportError, AttributeError) as err:
    raise ValueError(f'cannot import extra term function {path!r}: {err}') from err


def build_method(config) -> Method:
  """The config's method, plus any `config.extra_terms`.

  Each extra term is a dict with keys name, fn ('package.module:function'),
  updates ('encoder' | 'decoder' | 'both'), coeff (a config field name) and
  optionally warmup (default True).
  """
  if config.method not in METHODS:
    raise ValueError(f'config.method: unknown method {config.method!r}; '
                     f'choose one of {sorted(METHODS)}')
  method = METHODS[config.method]
  extra = []
  for spec in config.get('extra_terms', None) or ():
    extra.append(Term(name=spec['name'], fn=_import_function(spec['fn']),
                      updates=spec['updates'], coeff=spec.get('coeff'),
                      warmup=bool(spec.get('warmup', True))))
  return method.with_terms(*extra) if extra else method


def build_model(config, method: Method, channels: int) -> AutoEncoder:
  """The AutoEncoder a config describes (log-variance head if the method needs it)."""
  dtype = jnp.bfloat16 if config.get('compute_dtype', 'float32') == 'bfloat16' else None
  return AutoEncoder(config.arch, int(config.latent_dim), channels, bool(config.use_bn),
                     with_logvar=method.needs_logvar, dtype=dtype,
                     conv_impl=config.get('conv_impl', 'auto'))


def make_loss_fn(config, channels: int, fast: bool = True):
  """`loss_fn(params, images, rng, step) -> (loss, metrics)` for the config.

  A pure function of its arguments: the config's values are fixed when it is
  built, so it can be jitted and differentiated as it is. `fast`: see
  `method_loss` (False: the plain term sum, same values and gradients).
  """
  method = build_method(config)
  model = build_model(config, method, channels)

  def loss_fn(params, images, rng, step):
    return method_loss(method, model, params, images, rng, step, config, fast=fast)

  return loss_fn, model, method
