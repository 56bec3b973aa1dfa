"""Methods (AE, VAE, LPGA, VPGA, LVPGA) as weighted sums of named terms.

A method is one declaration (`Method`): its terms, each naming its function,
the config field holding its coefficient, which parameters it may update and
whether the warm-up switches it off, and its defaults (latent size,
coefficients, warm-up) for the config fields whose value depends on the
method. The list of methods, the `method` field's check, `--config.method`
and the per-method defaults all come from `METHODS`. `method_loss` is the one
place that turns a method into a scalar:

    L = sum_i  c_i(step) * term_i(route(params, updates_i), ...)

Routing is by `stop_gradient` on whole parameter subtrees, so the gradient
of L w.r.t. the encoder is the gradient of the reference's *encoder loss*
and w.r.t. the decoder that of its *decoder loss* (one optimizer, two
gradient sets), e.g. for LPGA (Eq. 7):

    encoder loss = L_r + a*L_lr,N + b*L_lr,H + g*L_nll^phi
    decoder loss = L_r + g*L_nll^theta

The terms, their coefficients and routing per method are the authors' code
(`train_lpga.py`, `train_vpga.py`, `train_lvpga.py`, and the VAE baseline's
`train.py`; docs/reference_code.md); tests/test_reference_transcription.py
checks every method's gradients against a transcription of those files.

The coefficients c_i are an argument of the loss (`coefficients`), so a
changed coefficient or a schedule does not recompile and `jax.vmap` can run
several settings at once; which terms are computed at all is fixed when the
loss is built (those whose configured coefficient is not 0).
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Callable, Dict, Mapping, Optional

import jax
import jax.numpy as jnp

from pga_jax import passes, terms, user_code
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
  needs_posterior: it reads the encoder's log-variance head (the model gets
    one when any of the method's terms needs it).
  value: the coefficient itself, for a term switched on by
    'module:function=VALUE' in `config.extra_terms`; None reads `config[coeff]`.
  """

  name: str
  fn: TermFn
  updates: str
  coeff: Optional[str] = None
  warmup: bool = True
  needs_posterior: bool = False
  value: Optional[float] = None

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
    for flag in ('warmup', 'needs_posterior'):
      if not isinstance(getattr(self, flag), bool):
        raise ValueError(
          f'term {self.name!r}: {flag} must be True or False, got {getattr(self, flag)!r}'
        )
    if self.value is not None and (
      isinstance(self.value, bool) or not isinstance(self.value, (int, float)) or self.value < 0
    ):
      raise ValueError(f'term {self.name!r}: its coefficient must be >= 0, got {self.value!r}')


@dataclasses.dataclass(frozen=True)
class Method:
  """A method: its terms and its defaults.

  defaults: {config field: value} for the fields whose default is the
  method's own (`config.base_config(method)` uses them; every other field
  has the default of `config_fields.FIELDS`). A name that is no field of
  that table, e.g. the coefficient of a term only this method has, becomes a
  field of the method's configs (`--config.NAME=...` sets it). The encoder
  has a log-variance head when a term needs the posterior (`needs_logvar`).
  """

  name: str
  terms: tuple
  defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)
  doc: str = ''

  @property
  def needs_logvar(self) -> bool:
    return any(t.needs_posterior for t in self.terms)

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
_VKLD = Term('vkld', terms.kl_divergence, 'encoder', 'vkld', needs_posterior=True)
_VREC = Term('vrec', terms.variational_reconstruction, 'both', 'vrec', needs_posterior=True)
_KL = Term('kl', terms.kl_divergence, 'encoder', 'beta', warmup=False, needs_posterior=True)

AE = Method('ae', (_REC,), defaults=dict(latent_dim=12), doc='the plain autoencoder, Eq. 1')
# The VAE baseline minimises one loss w.r.t. both networks; the KL does not
# depend on the decoder.
VAE = Method(
  'vae',
  (Term('rec', terms.vae_reconstruction, 'both', warmup=False, needs_posterior=True), _KL),
  defaults=dict(latent_dim=32, beta=0.1),
  doc='the VAE baseline (the public TensorFlow VAE the reference builds on)',
)
# train_lpga.py: encoder loss L_r + zn_rec*L_lr,N (+ zh_rec*L_lr,H) + nll*Eq.5,
# decoder loss L_r + nll*Eq.6; all but L_r off during the warm-up.
LPGA = Method(
  'lpga',
  (_REC, _ZN_REC, _ZH_REC, _NLL_ENC, _NLL_DEC),
  defaults=dict(latent_dim=12, zn_rec=6e-2, nll=1.5e-2, init_steps=3000),
  doc='LPGA, Eq. 7',
)
# train_vpga.py: vrec (Eq. 10's reconstruction) in both losses, no warm-up.
VPGA = Method(
  'vpga',
  tuple(dataclasses.replace(t, warmup=False) for t in (_REC, _ZN_REC, _ZH_REC, _VREC, _VKLD)),
  defaults=dict(latent_dim=32, zn_rec=6e-2, vrec=1e-2, vkld=2e-2),
  doc='VPGA, Eq. 10',
)
# train_lvpga.py: its `vrec` is Eq. 6 with posterior perturbations (not VPGA's
# squared error), in both losses; `nll` weights only the encoder's Eq. 5;
# everything but L_r is off during the warm-up.
LVPGA = Method(
  'lvpga',
  (
    _REC,
    _ZN_REC,
    _ZH_REC,
    Term('vrec', terms.posterior_log_det, 'both', 'vrec', needs_posterior=True),
    _VKLD,
    _NLL_ENC,
  ),
  defaults=dict(latent_dim=32, zn_rec=6e-2, vrec=2e-2, vkld=2e-2, init_steps=3000),
  doc='LVPGA: LPGA and VPGA combined',
)

METHODS = {m.name: m for m in (AE, VAE, LPGA, VPGA, LVPGA)}

# The project's terms a coefficient switches on in a method that does not
# have them: {coefficient field: terms}, e.g. `--config.method=vae
# --config.zn_rec=0.06` adds L_lr,N to the VAE's encoder loss.
SWITCHABLE = {
  'zn_rec': (_ZN_REC,),
  'zh_rec': (_ZH_REC,),
  'nll': (_NLL_ENC, _NLL_DEC),
  'vrec': (_VREC,),
  'vkld': (_VKLD,),
  'beta': (_KL,),
}


def resolve(name, code_dir: Optional[str] = None) -> Method:
  """The method `name` names: one of `METHODS`, or a researcher's
  'module:NAME' (a `Method` in their own file, see `user_code`)."""
  if isinstance(name, Method):
    return name
  if user_code.is_named(name):
    method = user_code.import_named(name, code_dir, what='method')
    if not isinstance(method, Method):
      raise ValueError(f'method {name!r} is a {type(method).__name__}, not a methods.Method')
    return method
  if name not in METHODS:
    raise ValueError(
      f"unknown method {name!r}; choose one of {sorted(METHODS)} or name your own as 'module:NAME'"
    )
  return METHODS[name]


def defaults(name, code_dir: Optional[str] = None) -> Mapping[str, Any]:
  """The config-field defaults of method `name` (see `Method.defaults`)."""
  return resolve(name, code_dir).defaults


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


def coefficient_value(term: Term, config) -> float:
  """The term's configured coefficient (a Python float; 1 for a term without one)."""
  if term.value is not None:
    return float(term.value)
  return 1.0 if term.coeff is None else float(config[term.coeff])


def active_terms(method: Method, config) -> tuple:
  """The terms that are computed: those whose configured coefficient is not exactly 0."""
  return tuple(t for t in method.terms if coefficient_value(t, config) != 0.0)


def coefficients(method: Method, config) -> Dict[str, jax.Array]:
  """{coefficient name: float32 scalar} of the method's active terms, from the
  config: the `coefficients` argument of `method_loss` and the train step.

  Change a value (or compute one per step) without rebuilding the loss: the
  values are traced, so nothing recompiles. A term without a coefficient
  field (L_r) has weight 1 and no entry.
  """
  return {
    t.coeff: jnp.asarray(coefficient_value(t, config), jnp.float32)
    for t in active_terms(method, config)
    if t.coeff is not None
  }


def term_coefficient(term: Term, config, step: jax.Array, coefficients=None) -> jax.Array:
  """The term's weight at `step`: its coefficient (`coefficients[term.coeff]`,
  or the config's when `coefficients` is None), times the warm-up's share
  for a warm-up term. Before the switch the weight is exactly 0, after it
  exactly the coefficient, as the reference's `tf.cond` gives."""
  if term.coeff is None:
    base = jnp.float32(1.0)
  elif coefficients is None:
    base = jnp.float32(coefficient_value(term, config))
  else:
    base = jnp.asarray(coefficients[term.coeff], jnp.float32)
  if term.warmup:
    return base * warmup_weight(step, int(config.init_steps), int(config.warmup_ramp_steps))
  return base


def term_rng(rng: jax.Array, name: str) -> jax.Array:
  """Each term's own key, stable when terms are added or removed."""
  return jax.random.fold_in(rng, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def method_loss(
  method: Method,
  model: AutoEncoder,
  params: dict,
  images: jax.Array,
  rng: jax.Array,
  step: jax.Array,
  config,
  fast: bool = True,
  coefficients: Optional[Mapping[str, jax.Array]] = None,
):
  """The method's total loss and a dict of metrics (each term's unweighted value).

  Terms whose configured coefficient is exactly 0 are not computed at all.
  `coefficients` ({name: scalar}, see `coefficients`) weights the others;
  None uses the config's values as constants.

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
    weight = term_coefficient(term, config, step, coefficients)
    # `where`, not a product, so a term that is switched off cannot turn the
    # loss into NaN (0 * inf) during the warm-up.
    total = total + jnp.where(weight > 0, weight * value, 0.0)
    metrics[term.name] = value
  metrics['loss'] = total
  return total, metrics


def _term_from_dict(spec, code_dir) -> Term:
  fn = spec['fn']
  if isinstance(fn, str):
    fn = user_code.import_named(fn, code_dir, what='term function')
  return Term(
    name=spec['name'],
    fn=fn,
    updates=spec['updates'],
    coeff=spec.get('coeff'),
    warmup=spec.get('warmup', True),
    needs_posterior=spec.get('needs_posterior', False),
  )


def parse_term_spec(text: str, code_dir: Optional[str] = None) -> Term:
  """A term from its command-line form 'module:NAME[@updates]=COEFFICIENT'.

  NAME is a `Term` (its name, routing and warm-up as declared; '@updates'
  may change the routing) or a term function (then '@updates' is required,
  and the term is named after the function, warms up like PGA's terms).
  E.g. 'l1_term:L1=0.1', 'my_terms:l1_rec@both=0.1'.
  """
  form = "'module:NAME[@encoder|@decoder|@both]=COEFFICIENT'"
  target, eq, value_text = text.strip().partition('=')
  target, at, updates = target.partition('@')
  if not eq:
    raise ValueError(f'extra term {text!r}: give its coefficient, as {form}')
  try:
    value = float(value_text)
  except ValueError:
    raise ValueError(f'extra term {text!r}: coefficient {value_text!r} is not a number') from None
  obj = user_code.import_named(target.strip(), code_dir, what='extra term')
  if isinstance(obj, Term):
    term = obj
  elif callable(obj):
    if not at:
      raise ValueError(
        f'extra term {text!r}: {target.strip()!r} is a function; say which parameters it '
        f'updates, as {form}'
      )
    term = Term(target.partition(':')[2].strip(), obj, updates.strip())
  else:
    raise ValueError(f'extra term {text!r}: {target.strip()!r} is neither a Term nor a function')
  if at:
    term = dataclasses.replace(term, updates=updates.strip())
  return dataclasses.replace(term, coeff=term.name, value=value)


def extra_terms(config) -> tuple:
  """The terms `config.extra_terms` adds: dicts (keys name, fn, updates,
  coeff, optionally warmup, needs_posterior) from a config file, or
  'module:NAME[@updates]=COEFFICIENT' strings (several separated by commas)
  from the command line."""
  code_dir = config.get('code_dir')
  found = []
  for spec in config.get('extra_terms') or ():
    if isinstance(spec, str):
      found.extend(parse_term_spec(part, code_dir) for part in spec.split(',') if part.strip())
    else:
      found.append(_term_from_dict(spec, code_dir))
  return tuple(found)


def build_method(config) -> Method:
  """The config's method, plus the project's terms its nonzero coefficients
  switch on (`SWITCHABLE`) and `config.extra_terms`."""
  try:
    method = resolve(config.method, config.get('code_dir'))
  except ValueError as err:
    raise ValueError(f'config.method: {err}') from err
  fields = {t.coeff for t in method.terms}
  switched = [
    term
    for field, group in SWITCHABLE.items()
    if field not in fields and field in config and float(config[field]) != 0.0
    for term in group
  ]
  extra = switched + list(extra_terms(config))
  inline = {t.coeff for t in extra if t.value is not None}
  clash = sorted(inline & (fields | set(config.keys())))
  if clash:
    raise ValueError(
      f'extra term {clash[0]!r} has the name of a config field or of another coefficient; rename it'
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
  """`loss_fn(params, images, rng, step, coefficients=None) -> (loss, metrics)`.

  A pure function of its arguments: the config decides which terms are
  computed when it is built; `coefficients` (`methods.coefficients`) weights
  them as traced values, None the config's values as constants. It can be
  jitted, differentiated and vmapped (over coefficients too) as it is.
  `fast`: see `method_loss` (False: the plain term sum, same values and
  gradients).
  """
  method = build_method(config)
  model = build_model(config, method, channels)

  def loss_fn(params, images, rng, step, coefficients=None):
    return method_loss(
      method, model, params, images, rng, step, config, fast=fast, coefficients=coefficients
    )

  return loss_fn, model, method
