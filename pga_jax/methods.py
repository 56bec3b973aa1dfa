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

The terms, their coefficients and routing per method are the authors' code
(`train_lpga.py`, `train_vpga.py`, `train_lvpga.py`, and the VAE baseline's
`train.py`); tests/test_reference_transcription.py checks every method's
gradients against a transcription of those files.
"""

from __future__ import annotations

import dataclasses
import importlib
import zlib
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from pga_jax import passes, terms
from pga_jax.models import AutoEncoder

TermFn = Callable[..., jax.Array]
# Metrics method_loss and the train step write beside the terms' values.
RESERVED_METRICS = ('loss', 'finite', 'grad_norm', 'steps_per_sec')
UPDATES = passes.UPDATES
route = passes.route


@dataclasses.dataclass(frozen=True)
class Term:
  """One named loss term of a method.

  name: metric name. fn: `fn(model, params, images, rng, config) -> scalar`.
  updates: 'encoder', 'decoder' or 'both': the parameters its gradient reaches.
  coeff: config field holding its coefficient; None means 1.
  warmup: if True, its coefficient is 0 until more than `config.init_steps`
    steps have been applied (`warmup_weight`).
  """

  name: str
  fn: TermFn
  updates: str
  coeff: Optional[str] = None
  warmup: bool = True

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name:
      raise ValueError(f'a term name must be a non-empty string, got {self.name!r}')
    if self.updates not in UPDATES:
      raise ValueError(
        f'term {self.name!r}: updates must be one of {UPDATES}, got {self.updates!r}'
      )
    if not callable(self.fn):
      raise ValueError(f'term {self.name!r}: fn must be a function, got {self.fn!r}')
    if self.coeff is not None and (not isinstance(self.coeff, str) or not self.coeff):
      raise ValueError(
        f'term {self.name!r}: coeff must be a config field name or None, got {self.coeff!r}'
      )
    if not isinstance(self.warmup, bool):
      raise ValueError(f'term {self.name!r}: warmup must be True or False, got {self.warmup!r}')


@dataclasses.dataclass(frozen=True)
class Method:
  """A method: its terms, and whether the encoder has a log-variance head."""

  name: str
  terms: tuple
  needs_logvar: bool

  def with_terms(self, *extra: Term) -> 'Method':
    """This method plus extra terms (how a researcher adds a loss term)."""
    names = [t.name for t in self.terms + tuple(extra)]
    if len(set(names)) != len(names):
      raise ValueError(f'duplicate term names in {names}; choose another name')
    reserved = sorted(set(names) & set(RESERVED_METRICS))
    if reserved:
      raise ValueError(
        f'term name {reserved[0]!r} is a metric the train step writes '
        f'({RESERVED_METRICS}); choose another name'
      )
    return dataclasses.replace(self, terms=self.terms + tuple(extra))


_REC = Term('rec', terms.reconstruction, 'both', warmup=False)
_ZN_REC = Term('zn_rec', terms.latent_reconstruction_prior, 'encoder', 'zn_rec')
_ZH_REC = Term('zh_rec', terms.latent_reconstruction_data, 'encoder', 'zh_rec')
_NLL_ENC = Term('nll_enc', terms.nll_encoder, 'encoder', 'nll')
_NLL_DEC = Term('nll_dec', terms.nll_decoder, 'decoder', 'nll')
_VKLD = Term('vkld', terms.kl_divergence, 'encoder', 'vkld')

AE = Method('ae', (_REC,), needs_logvar=False)
# The VAE baseline minimises one loss w.r.t. both networks; the KL does not
# depend on the decoder.
VAE = Method(
  'vae',
  (
    Term('rec', terms.vae_reconstruction, 'both', warmup=False),
    Term('kl', terms.kl_divergence, 'encoder', 'beta', warmup=False),
  ),
  needs_logvar=True,
)
# train_lpga.py: encoder loss L_r + zn_rec*L_lr,N (+ zh_rec*L_lr,H) + nll*Eq.5,
# decoder loss L_r + nll*Eq.6; all but L_r off during the warm-up.
LPGA = Method('lpga', (_REC, _ZN_REC, _ZH_REC, _NLL_ENC, _NLL_DEC), needs_logvar=False)
# train_vpga.py: vrec (Eq. 10's reconstruction) in both losses, no warm-up.
VPGA = Method(
  'vpga',
  tuple(
    dataclasses.replace(t, warmup=False)
    for t in (
      _REC,
      _ZN_REC,
      _ZH_REC,
      Term('vrec', terms.variational_reconstruction, 'both', 'vrec'),
      _VKLD,
    )
  ),
  needs_logvar=True,
)
# train_lvpga.py: its `vrec` is Eq. 6 with posterior perturbations (not VPGA's
# squared error), in both losses; `nll` weights only the encoder's Eq. 5;
# everything but L_r is off during the warm-up.
LVPGA = Method(
  'lvpga',
  (_REC, _ZN_REC, _ZH_REC, Term('vrec', terms.posterior_log_det, 'both', 'vrec'), _VKLD, _NLL_ENC),
  needs_logvar=True,
)

METHODS = {m.name: m for m in (AE, VAE, LPGA, VPGA, LVPGA)}


def warmup_weight(step: jax.Array, init_steps: int, ramp_steps: int = 0) -> jax.Array:
  """The warm-up terms' share of their coefficient at `step`, in [0, 1].

  `step` is the number of steps already applied, the reference's
  `global_step` while it computes a step. The reference switches its terms
  on at once with `tf.cond(global_step > init_steps, ...)`: 0 up to
  `init_steps`, 1 after (ramp_steps = 0). With ramp_steps = R > 0 (not the
  reference's) the share grows linearly, 1/R at step init_steps + 1 and 1 from
  step init_steps + R on.
  """
  progress = (jnp.asarray(step, jnp.float32) - init_steps) / max(int(ramp_steps), 1)
  return jnp.clip(progress, 0.0, 1.0)


def term_coefficient(term: Term, config, step: jax.Array) -> jax.Array:
  base = 1.0 if term.coeff is None else float(config[term.coeff])
  if term.warmup:
    return base * warmup_weight(step, int(config.init_steps), int(config.warmup_ramp_steps))
  return jnp.asarray(base, jnp.float32)


def term_rng(rng: jax.Array, name: str) -> jax.Array:
  """Each term's own key, stable when terms are added or removed."""
  return jax.random.fold_in(rng, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def active_terms(method: Method, config) -> tuple:
  """The terms that are computed: those whose coefficient is not exactly 0."""
  return tuple(t for t in method.terms if t.coeff is None or float(config[t.coeff]) != 0.0)


def method_loss(
  method: Method,
  model: AutoEncoder,
  params: dict,
  images: jax.Array,
  rng: jax.Array,
  step: jax.Array,
  config,
  fast: bool = True,
):
  """The method's total loss and a dict of metrics (each term's unweighted value).

  Terms whose configured coefficient is exactly 0 are not computed at all.

  fast=True (the default, what training uses) hands every term a
  `passes.SharedPasses`, which computes the passes terms share (f(x), g(f(x))
  and the centre of Eq. 6 / vrec) once; fast=False calls every term with the
  plain model. Values and gradients are the same up to float32 rounding
  (tests/test_fast_paths.py).

  The warm-up stays a traced 0/1 weight: a `lax.cond` that skipped the
  switched-off terms' backward passes would make the warm-up step nearly
  as cheap as the AE step, but XLA:CPU runs convolutions inside conditional
  branches without its YNNPACK kernels, 5-10x slower (docs/benchmarks.md).
  """
  shared = passes.SharedPasses(model, params, images) if fast else None
  total = jnp.zeros((), jnp.float32)
  metrics = {}
  for term in active_terms(method, config):
    if shared is not None:
      value = term.fn(shared, shared.route(term.updates), images, term_rng(rng, term.name), config)
    else:
      value = term.fn(model, route(params, term.updates), images, term_rng(rng, term.name), config)
    weight = term_coefficient(term, config, step)
    # `where`, not a product, so a term that is switched off cannot turn the
    # loss into NaN (0 * inf) during the warm-up.
    total = total + jnp.where(weight > 0, weight * value, 0.0)
    metrics[term.name] = value
  metrics['loss'] = total
  return total, metrics


def _import_function(path) -> TermFn:
  if not isinstance(path, str) or not path.partition(':')[2]:
    raise ValueError(f"extra term function {path!r} must be a 'package.module:function' string")
  module_name, _, attr = path.partition(':')
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
    raise ValueError(
      f'config.method: unknown method {config.method!r}; choose one of {sorted(METHODS)}'
    )
  method = METHODS[config.method]
  extra = []
  for spec in config.extra_terms or ():
    extra.append(
      Term(
        name=spec['name'],
        fn=_import_function(spec['fn']),
        updates=spec['updates'],
        coeff=spec.get('coeff'),
        warmup=spec.get('warmup', True),
      )
    )
  return method.with_terms(*extra) if extra else method


def build_model(config, method: Method, channels: int) -> AutoEncoder:
  """The AutoEncoder a config describes (log-variance head if the method needs it)."""
  dtype = jnp.bfloat16 if config.compute_dtype == 'bfloat16' else None
  return AutoEncoder(
    config.arch,
    int(config.latent_dim),
    channels,
    bool(config.use_bn),
    with_logvar=method.needs_logvar,
    dtype=dtype,
    conv_impl=config.conv_impl,
  )


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
