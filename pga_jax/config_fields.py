"""The one table of run-config fields: default, check, resume rule.

Each field is declared once here, as a `Field`. Everything else is derived:
`config.base_config` builds a config from the table (a method's own defaults,
`methods.Method.defaults`, on top), `config.validate` runs each field's check,
`checkpointing.check_compatible` compares the fields marked `structural`.

To add a field: add one `Field` to `FIELDS`. If runs were stored before it
existed, set `added_later=True` with the default those runs used: a stored
config is brought up to date when it is loaded (`upgrade`, called by
`checkpointing.load_config`), so every reader can use `config.<field>`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, Optional

from pga_jax import methods, user_code
from pga_jax.conv_forms import CONV_IMPLS
from pga_jax.data import catalog
from pga_jax.models import ARCHITECTURES

METHOD_NAMES = tuple(methods.METHODS)
OPTIMIZERS = ('sgd', 'adam')
COMPUTE_DTYPES = ('float32', 'bfloat16')
EVAL_FEATURES = ('domain', 'inception')

# A check takes a field's value and returns what is wrong with it, or None.
Check = Callable[[Any], Optional[str]]


def is_int(value) -> bool:
  """An integer that is not a bool."""
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
  """A finite real number (not a bool, not NaN or Inf)."""
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def integer(minimum: int, maximum: Optional[int] = None) -> Check:
  """An int in [minimum, maximum] (no maximum if None)."""

  def check(value):
    if not is_int(value) or value < minimum or (maximum is not None and value > maximum):
      bound = f'>= {minimum}' if maximum is None else f'in [{minimum}, {maximum}]'
      return f'must be an integer {bound}, got {value!r}'
    return None

  return check


def number(minimum: float, below: Optional[float] = None, above_minimum: bool = False) -> Check:
  """A finite number >= minimum (> minimum if above_minimum), and < below if given."""

  def check(value):
    low_ok = is_number(value) and (value > minimum if above_minimum else value >= minimum)
    if not low_ok or (below is not None and value >= below):
      if below is not None:
        return f'must be a number in [{minimum}, {below}), got {value!r}'
      return f'must be a finite number {">" if above_minimum else ">="} {minimum}, got {value!r}'
    return None

  return check


def one_of(choices) -> Check:
  """One of `choices` (compared by value; bools are not ints)."""

  def check(value):
    if isinstance(value, bool) or value not in choices:
      return f'must be one of {tuple(choices)}, got {value!r}'
    return None

  check.choices = tuple(choices)
  return check


def integer_in(choices) -> Check:
  """An int (not a bool, not a float) that is one of `choices`."""

  def check(value):
    if not is_int(value) or value not in choices:
      return f'must be one of {tuple(choices)}, got {value!r}'
    return None

  check.choices = tuple(choices)
  return check


def boolean(value) -> Optional[str]:
  """True or False."""
  return None if isinstance(value, bool) else f'must be True or False, got {value!r}'


def optional_text(what: str) -> Check:
  """None, or a string naming `what`."""

  def check(value):
    if value is not None and not isinstance(value, str):
      return f'must be {what} (a string), got {value!r}'
    return None

  return check


def term_tuple(value) -> Optional[str]:
  """A tuple (or list) of term dicts or 'module:NAME=COEFFICIENT' strings;
  `config.validate` checks the terms themselves."""
  if not isinstance(value, (list, tuple)):
    return f"must be a tuple of term dicts or 'module:NAME=COEFFICIENT' strings, got {value!r}"
  return None


def method_name(value) -> Optional[str]:
  """One of `methods.METHODS`, or a researcher's method named 'module:NAME'
  (imported when the config is validated)."""
  if user_code.is_named(value) or (isinstance(value, str) and value in methods.METHODS):
    return None
  return f"must be one of {METHOD_NAMES} or your own method as 'module:NAME', got {value!r}"


method_name.choices = METHOD_NAMES


@dataclasses.dataclass(frozen=True)
class Field:
  """One config field.

  name: its path in the config ('optimizer.learning_rate' for a nested one).
  default: its value when the method has none of its own.
  check: returns what is wrong with a value, or None.
  structural: a resumed run must have the stored value (it changes what was
    trained, or the data order).
  added_later: runs were stored before the field existed; they ran with `default`.
  text_type: for a field whose default is None, the type the command line may set.
  doc: what the field is for, when the name does not say it.
  """

  name: str
  default: Any
  check: Check
  structural: bool = False
  added_later: bool = False
  text_type: Optional[type] = None
  coefficient: bool = False
  doc: str = ''

  def default_for(self, method, code_dir: Optional[str] = None) -> Any:
    """The field's default for `method` (a name or 'module:NAME'): the
    method's own (`methods.Method.defaults`) if it has one, else `default`."""
    return methods.defaults(method, code_dir).get(self.name, self.default)


def _coefficient(name: str, doc: str, added_later: bool = False) -> Field:
  """A loss coefficient (>= 0): 0 unless the method sets it (`methods.Method.defaults`)."""
  return Field(
    name, 0.0, number(0.0), structural=True, coefficient=True, added_later=added_later, doc=doc
  )


# Reference settings per method (methods.METHODS): docs/reference_code.md,
# "Published settings".
FIELDS = (
  Field('method', 'lpga', method_name, structural=True),
  Field('dataset', 'mnist', one_of(catalog.DATASETS), structural=True),
  Field(
    'data_dir',
    None,
    optional_text('a folder name'),
    text_type=str,
    doc='where the files of a folder/idx dataset (or a tfds data_dir) are',
  ),
  Field('image_size', 28, integer(1), structural=True, doc="used by 'folder' and 'idx' datasets"),
  Field(
    'channels', 1, integer_in((1, 3)), structural=True, doc="used by 'folder' and 'idx' datasets"
  ),
  Field('skip_bad_files', False, boolean),
  Field('arch', 'conv_mnist', one_of(sorted(ARCHITECTURES)), structural=True),
  Field('use_bn', False, boolean, structural=True),
  Field('latent_dim', 12, integer(1), structural=True),
  Field('compute_dtype', 'float32', one_of(COMPUTE_DTYPES), structural=True, added_later=True),
  Field(
    'conv_impl',
    'auto',
    one_of(CONV_IMPLS),
    added_later=True,
    doc="how convolutions are computed (all exact): 'auto' measures per layer shape and "
    "device and caches the choice; 'xla' | 'phase' | 'adjoint' force one "
    '(pga_jax.conv_forms.forms.layer_forms)',
  ),
  Field(
    'batch_size', 64, integer(1), structural=True, doc='global batch, over all devices and hosts'
  ),
  Field('num_steps', 600 * 60000 // 64, integer(1)),
  Field('seed', 0, integer(0, 2**32 - 1), structural=True, doc='PRNGKey keeps 32 bits'),
  # The paper trains every model, the VAE baseline included, with SGD and
  # momentum 0.9 (Section 3); `config.public_vae_adam` is the public VAE's Adam.
  Field('optimizer.name', 'sgd', one_of(OPTIMIZERS), structural=True),
  Field('optimizer.learning_rate', 0.1, number(0.0, above_minimum=True), structural=True),
  Field('optimizer.momentum', 0.9, number(0.0, below=1.0), structural=True),
  Field('optimizer.b1', 0.5, number(0.0, below=1.0), structural=True),
  Field('optimizer.b2', 0.999, number(0.0, below=1.0), structural=True),
  _coefficient('zn_rec', 'L_lr,N: latent reconstruction of prior samples'),
  _coefficient('zh_rec', 'L_lr,H: latent reconstruction of encoded data'),
  _coefficient('nll', 'Eqs. 5/6: the log-density terms'),
  _coefficient('vrec', 'VPGA: Eq. 10 reconstruction; LVPGA: Eq. 6 with posterior perturbations'),
  _coefficient('vkld', 'KL of the encoder posterior to the prior (VPGA, LVPGA)'),
  _coefficient('beta', "the VAE's KL weight"),
  Field(
    'init_steps',
    0,
    integer(0),
    structural=True,
    doc='warm-up: steps trained with L_r alone before the other terms start',
  ),
  Field(
    'warmup_ramp_steps',
    0,
    integer(0),
    structural=True,
    added_later=True,
    doc="not the reference's: > 0 raises the warm-up terms' coefficients linearly over this "
    'many steps after init_steps instead of all at once (docs/switch_on.md)',
  ),
  Field('num_perturbations', 1, integer(1), structural=True),
  Field(
    'extra_terms',
    (),
    term_tuple,
    structural=True,
    added_later=True,
    doc="loss terms a researcher adds: 'module:NAME[@updates]=COEFFICIENT' strings "
    '(the command line) or dicts (methods.extra_terms)',
  ),
  Field(
    'code_dir',
    None,
    optional_text('a folder name'),
    added_later=True,
    text_type=str,
    doc="where a researcher's modules named in method or extra_terms are looked for besides "
    "the working directory; pga train sets it to the config file's folder (user_code)",
  ),
  Field('log_every', 100, integer(1)),
  Field('sample_every', 2000, integer(1)),
  Field('checkpoint_every', 1000, integer(1)),
  Field('keep_checkpoints', 3, integer(1), doc='how many of the newest checkpoints are kept'),
  Field(
    'keep_checkpoint_every',
    0,
    integer(0),
    added_later=True,
    doc='> 0: also keep every checkpoint whose step is a multiple of this',
  ),
  Field('eval_every', 0, integer(0), doc='0: no evaluation during training'),
  Field('eval_num_samples', 5000, integer(1)),
  Field('eval_features', 'domain', one_of(EVAL_FEATURES)),
  Field(
    'eval_inception_weights',
    None,
    optional_text('a file name'),
    added_later=True,
    text_type=str,
    doc='FID Inception weights (.npz, see pga_jax.evaluation.convert_inception), for '
    "eval_features='inception'",
  ),
  Field('max_bad_steps', 20, integer(0), doc='consecutive non-finite steps before stopping'),
)

BY_NAME = {f.name: f for f in FIELDS}
COEFFICIENTS = tuple(f.name for f in FIELDS if f.coefficient)
STRUCTURAL = tuple(f.name for f in FIELDS if f.structural)
ADDED_LATER = {f.name: f.default for f in FIELDS if f.added_later}


def get(config, name: str, missing=KeyError):
  """The value at dotted path `name` of a ConfigDict or dict.

  An absent field gives its default if it is `added_later` (the value a run
  stored before it existed ran with), else `missing`; with the default
  `missing`, it raises KeyError.
  """
  node = config
  for part in name.split('.'):
    if not hasattr(node, 'keys') or part not in node:
      if name in ADDED_LATER:
        return ADDED_LATER[name]
      if missing is KeyError:
        raise KeyError(name)
      return missing
    node = node[part]
  return node


def upgrade(config):
  """Adds every `added_later` field that `config` (a ConfigDict) lacks, with
  the default the runs stored before it ran with; returns `config`.

  Stored configs are upgraded once, when loaded, so code reads `config.x`
  for every field of the table.
  """
  for name, default in ADDED_LATER.items():
    *parents, leaf = name.split('.')
    node = config
    for parent in parents:
      if parent not in node:
        node[parent] = {}
      node = node[parent]
    if leaf not in node:
      node[leaf] = default
  return config
