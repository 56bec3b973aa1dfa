"""Run configuration: defaults, the reference's per-method settings, validation.

Configs are `ml_collections.ConfigDict`s built by `get_config()` in
`experiments/configs/*.py`; `base_config(method)` gives the fields every
config has, with the reference's defaults for that method.
"""

from __future__ import annotations

import ml_collections

from pga_jax import config_fields, methods
from pga_jax.data import catalog
from pga_jax.models import ARCHITECTURES

METHOD_NAMES = config_fields.METHOD_NAMES
DATASETS = catalog.DATASETS
OPTIMIZERS = config_fields.OPTIMIZERS
COEFFICIENTS = config_fields.COEFFICIENTS


def base_config(method: str = 'lpga', code_dir: str = None) -> ml_collections.ConfigDict:
  """Every field a run reads (`config_fields.FIELDS`), with `method`'s
  defaults (`methods.Method.defaults`: the reference's, for the paper's
  methods). `method` is a name of `methods.METHODS` or a researcher's
  'module:NAME' (looked for as `user_code` says, also in `code_dir`)."""
  own = methods.defaults(method, code_dir)
  c = ml_collections.ConfigDict()
  for field in config_fields.FIELDS:
    if field.name == 'method':
      value = method
    elif field.name == 'code_dir' and code_dir is not None:
      value = code_dir
    else:
      value = own.get(field.name, field.default)
    if value is None and field.text_type is not None:
      value = ml_collections.FieldReference(None, field_type=field.text_type)
    *parents, leaf = field.name.split('.')
    node = c
    for parent in parents:
      if parent not in node:
        node[parent] = ml_collections.ConfigDict()
      node = node[parent]
    node[leaf] = value
  for name, value in own.items():  # the method's own fields, e.g. its coefficients
    if name not in config_fields.BY_NAME:
      c[name] = value
  return c


# The reference's per-dataset settings for the paper's experiments:
# (tfds name, arch, batch norm, SGD learning rate, training images, epochs).
PAPER_DATASETS = {
  'mnist': ('mnist', 'conv_mnist', False, 0.1, 60000, 600),
  'cifar10': ('cifar10', 'conv_32', True, 0.2, 50000, 400),
  'celeba': ('celeb_a', 'conv_64', True, 0.4, 162770, 100),
}


def paper_config(dataset: str, method: str, epochs: int = None) -> ml_collections.ConfigDict:
  """`base_config(method)` with the reference's settings for a Table 1 dataset.

  Every method, the VAE included, trains with SGD (momentum 0.9) at the
  dataset's learning rate, as the paper's Section 3 says; the VAE uses batch
  norm only where PGA does. FID is evaluated during training, as the
  reference does.
  """
  tfds_name, arch, use_bn, learning_rate, train_images, default_epochs = PAPER_DATASETS[dataset]
  config = base_config(method)
  config.dataset = tfds_name
  config.arch = arch
  config.use_bn = use_bn
  config.optimizer.learning_rate = learning_rate
  config.num_steps = (epochs or default_epochs) * train_images // config.batch_size
  config.eval_every = 2000
  config.eval_features = 'inception'
  return config


def public_vae_adam(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The public TensorFlow VAE's optimizer, which the paper's reference builds
  on: Adam, lr 2e-4, beta1 0.5, beta2 0.999. Not the paper's VAE (which uses
  SGD); a second, stronger-early baseline. Changes `config` and returns it."""
  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 2e-4
  config.optimizer.b1 = 0.5
  config.optimizer.b2 = 0.999
  return config


def image_shape(config) -> tuple:
  """(size, size, channels) of the config's images (`data.catalog`: a tfds
  dataset's own shape, else the config's image_size and channels)."""
  size, channels = catalog.dataset_info(config.dataset, config.image_size, config.channels)
  return (size, size, channels)


class ConfigError(ValueError):
  """A config field has a value that cannot work; the message names it."""


def _fail(field: str, message: str):
  raise ConfigError(f'config.{field}: {message}')


def _validate_terms(config) -> None:
  """The method resolves (a researcher's 'module:NAME' imports) and every
  extra term builds, with a coefficient field that is a number >= 0."""
  try:
    methods.resolve(config.method, config_fields.get(config, 'code_dir'))
  except ValueError as err:
    _fail('method', str(err))
  for spec in config_fields.get(config, 'extra_terms'):
    if isinstance(spec, str):
      continue
    if not isinstance(spec, (dict, ml_collections.ConfigDict)):
      _fail(
        'extra_terms',
        f"each extra term must be a dict or a 'module:NAME=COEFFICIENT' string, got {spec!r}",
      )
    for key in ('name', 'fn', 'updates'):
      if key not in spec:
        _fail('extra_terms', f'each extra term needs {key!r}; got {dict(spec)}')
  try:
    method = methods.build_method(config)
  except ValueError as err:
    _fail('extra_terms', str(err))
  for term in method.terms:
    if term.coeff is None or term.value is not None:
      continue
    if term.coeff not in config:
      _fail(
        'extra_terms',
        f'term {term.name!r} names coefficient {term.coeff!r}, which is not a config field; '
        f'add config.{term.coeff}',
      )
    value = config[term.coeff]
    if not config_fields.is_number(value) or value < 0:
      _fail(
        term.coeff,
        f'the coefficient of term {term.name!r} must be a finite number >= 0, got {value!r}',
      )


def validate(config, device_count: int = 1) -> None:
  """Rejects configs that cannot work, naming the field, before anything compiles.

  Every field of `config_fields.FIELDS` is checked for its type (ints are not
  bools, numbers are finite) and range, then the rules that join fields; a
  config that passes builds and trains. A field absent from a config stored
  before it existed (`added_later`) counts as its default.
  """
  for field in config_fields.FIELDS:
    try:
      value = config_fields.get(config, field.name)
    except KeyError:
      _fail(field.name, f'is missing; add it (default {field.default!r})')
    problem = field.check(value)
    if problem:
      _fail(field.name, problem)
  if config.dataset in catalog.FILE_DATASETS and not config.data_dir:
    _fail('data_dir', f'dataset {config.dataset!r} needs data_dir, the folder holding the files')
  size, _, _ = image_shape(config)
  if size != ARCHITECTURES[config.arch]:
    _fail(
      'arch',
      f'{config.arch} takes {ARCHITECTURES[config.arch]}x'
      f'{ARCHITECTURES[config.arch]} images but dataset {config.dataset!r} has '
      f'{size}x{size}; pick a matching arch or image_size',
    )
  if config.batch_size % device_count:
    _fail(
      'batch_size',
      f'{config.batch_size} is not divisible by the {device_count} '
      'devices; use a multiple of the device count',
    )
  if config.batch_size < 2 and config.use_bn:
    _fail('batch_size', 'batch norm needs a batch of at least 2')
  if config.method == 'vae' and config.beta <= 0:
    _fail('beta', 'the VAE needs beta > 0')
  _validate_terms(config)
