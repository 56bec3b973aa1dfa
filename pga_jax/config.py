"""Run configuration: defaults, the reference's per-method settings, validation.

Configs are `ml_collections.ConfigDict`s built by `get_config()` in
`experiments/configs/*.py`; `base_config(method)` gives the fields every
config has, with the reference's defaults for that method.
"""

from __future__ import annotations

import math
import numbers

import ml_collections

from pga_jax.data import catalog
from pga_jax.models import ARCHITECTURES
from pga_jax.models.layers import CONV_IMPLS

METHOD_NAMES = ('ae', 'vae', 'lpga', 'vpga', 'lvpga')
DATASETS = catalog.DATASETS
OPTIMIZERS = ('sgd', 'adam')
COEFFICIENTS = ('zn_rec', 'zh_rec', 'nll', 'vrec', 'vkld', 'beta')

# Reference defaults per method (docs/reference-implementation.md,
# "Published settings"): latent size, coefficients, warm-up, optimizer.
_METHOD_DEFAULTS = {
  'ae': dict(latent_dim=12, init_steps=0),
  'vae': dict(latent_dim=32, beta=0.1, init_steps=0),
  'lpga': dict(latent_dim=12, zn_rec=6e-2, zh_rec=0.0, nll=1.5e-2, init_steps=3000),
  'vpga': dict(latent_dim=32, zn_rec=6e-2, zh_rec=0.0, vrec=1e-2, vkld=2e-2, init_steps=0),
  'lvpga': dict(
    latent_dim=32, zn_rec=6e-2, zh_rec=0.0, vrec=2e-2, vkld=2e-2, nll=0.0, init_steps=3000
  ),
}


def base_config(method: str = 'lpga') -> ml_collections.ConfigDict:
  """Every field a run reads, with the reference's defaults for `method`."""
  if method not in _METHOD_DEFAULTS:
    raise ValueError(f'unknown method {method!r}; choose one of {METHOD_NAMES}')
  c = ml_collections.ConfigDict()
  c.method = method
  c.dataset = 'mnist'
  c.data_dir = ml_collections.FieldReference(None, field_type=str)
  c.image_size = 28  # used by 'folder' and 'idx' datasets
  c.channels = 1  # used by 'folder' and 'idx' datasets
  c.skip_bad_files = False
  c.arch = 'conv_mnist'
  c.use_bn = False
  c.latent_dim = 12
  c.compute_dtype = 'float32'
  # How convolutions are computed (all exact): 'auto' measures per layer shape
  # and device and caches the choice; 'xla' | 'phase' | 'adjoint' force one
  # (pga_jax.models.layers.layer_forms).
  c.conv_impl = 'auto'
  c.batch_size = 64  # global batch, over all devices and hosts
  c.num_steps = 600 * 60000 // 64
  c.seed = 0

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'adam' if method == 'vae' else 'sgd'
  c.optimizer.learning_rate = 2e-4 if method == 'vae' else 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.b1 = 0.5
  c.optimizer.b2 = 0.999

  for name in COEFFICIENTS:
    c[name] = 0.0
  c.init_steps = 0
  # Not the reference's: > 0 raises the warm-up terms' coefficients linearly
  # over this many steps after init_steps instead of all at once (README).
  c.warmup_ramp_steps = 0
  c.num_perturbations = 1
  c.extra_terms = ()
  for key, value in _METHOD_DEFAULTS[method].items():
    c[key] = value

  c.log_every = 100
  c.sample_every = 2000
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  c.eval_every = 0  # 0: no evaluation during training
  c.eval_num_samples = 5000
  c.eval_features = 'domain'
  # FID Inception weights (.npz, see pga_jax.evaluation.convert_inception), for
  # eval_features='inception'.
  c.eval_inception_weights = ml_collections.FieldReference(None, field_type=str)
  c.max_bad_steps = 20  # consecutive non-finite steps before stopping
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

  The VAE keeps its own optimizer (Adam, lr 2e-4) and uses batch norm only
  where PGA does. FID is evaluated during training, as the reference does.
  """
  tfds_name, arch, use_bn, learning_rate, train_images, default_epochs = PAPER_DATASETS[dataset]
  config = base_config(method)
  config.dataset = tfds_name
  config.arch = arch
  config.use_bn = use_bn
  if method != 'vae':
    config.optimizer.learning_rate = learning_rate
  config.num_steps = (epochs or default_epochs) * train_images // config.batch_size
  config.eval_every = 2000
  config.eval_features = 'inception'
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


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
  """A finite real number (not a bool, not NaN or Inf)."""
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(config, field: str, minimum: int, maximum: int = None) -> None:
  value = config[field]
  if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
    bound = f'>= {minimum}' if maximum is None else f'in [{minimum}, {maximum}]'
    _fail(field, f'must be an integer {bound}, got {value!r}')


RESERVED_METRICS = ('loss', 'finite', 'grad_norm', 'steps_per_sec')


def _validate_extra_terms(config) -> None:
  from pga_jax import methods  # pylint: disable=g-import-not-at-top  (methods imports models)

  extra = config.extra_terms or ()
  if not isinstance(extra, (list, tuple)):
    _fail('extra_terms', f'must be a tuple of term dicts, got {extra!r}')
  taken = set(RESERVED_METRICS)
  if config.method in methods.METHODS:
    taken |= {t.name for t in methods.METHODS[config.method].terms}
  for spec in extra:
    if not isinstance(spec, (dict, ml_collections.ConfigDict)):
      _fail('extra_terms', f'each extra term must be a dict, got {spec!r}')
    for key in ('name', 'fn', 'updates'):
      if key not in spec:
        _fail('extra_terms', f'each extra term needs {key!r}; got {dict(spec)}')
    name = spec['name']
    if not isinstance(name, str) or not name:
      _fail('extra_terms', f'a term name must be a non-empty string, got {name!r}')
    if name in taken:
      _fail(
        'extra_terms',
        f'term name {name!r} is already used (by the method, another '
        f'extra term, or a metric: {RESERVED_METRICS}); choose another name',
      )
    taken.add(name)
    if spec['updates'] not in methods.UPDATES:
      _fail(
        'extra_terms',
        f'term {name!r}: updates must be one of {methods.UPDATES}, got {spec["updates"]!r}',
      )
    if 'warmup' in spec and not isinstance(spec['warmup'], bool):
      _fail('extra_terms', f'term {name!r}: warmup must be True or False, got {spec["warmup"]!r}')
    if not isinstance(spec['fn'], str):
      _fail(
        'extra_terms',
        f"term {name!r}: fn must be a 'package.module:function' string, got {spec['fn']!r}",
      )
    try:
      fn = methods._import_function(spec['fn'])  # pylint: disable=protected-access
    except ValueError as err:
      _fail('extra_terms', f'term {name!r}: {err}')
    if not callable(fn):
      _fail('extra_terms', f'term {name!r}: {spec["fn"]!r} is not a function')
    coeff = spec.get('coeff')
    if coeff is not None:
      if not isinstance(coeff, str) or coeff not in config:
        _fail(
          'extra_terms',
          f'term {name!r} names coefficient {coeff!r}, '
          f'which is not a config field; add config.{coeff}',
        )
      if not _is_number(config[coeff]) or config[coeff] < 0:
        _fail(
          coeff,
          f'the coefficient of term {name!r} must be a finite number >= 0, got {config[coeff]!r}',
        )


def validate(config, device_count: int = 1) -> None:
  """Rejects configs that cannot work, naming the field, before anything compiles.

  Every field a run reads is checked for its type (ints are not bools, numbers
  are finite) and range; a config that passes builds and trains.
  """
  if config.method not in METHOD_NAMES:
    _fail('method', f'unknown method {config.method!r}; choose one of {METHOD_NAMES}')
  if config.arch not in ARCHITECTURES:
    _fail('arch', f'unknown arch {config.arch!r}; choose one of {sorted(ARCHITECTURES)}')
  if config.dataset not in DATASETS:
    _fail('dataset', f'unknown dataset {config.dataset!r}; choose one of {DATASETS}')
  if config.data_dir is not None and not isinstance(config.data_dir, str):
    _fail('data_dir', f'must be a folder name (a string), got {config.data_dir!r}')
  if config.dataset in ('folder', 'idx') and not config.data_dir:
    _fail('data_dir', f'dataset {config.dataset!r} needs data_dir, the folder holding the files')
  if config.dataset not in catalog.TFDS_SHAPES:
    _check_int(config, 'image_size', 1)
    if not _is_int(config.channels) or config.channels not in (1, 3):
      _fail('channels', f'must be 1 or 3, got {config.channels!r}')
  size, _, channels = image_shape(config)
  if size != ARCHITECTURES[config.arch]:
    _fail(
      'arch',
      f'{config.arch} takes {ARCHITECTURES[config.arch]}x'
      f'{ARCHITECTURES[config.arch]} images but dataset {config.dataset!r} has '
      f'{size}x{size}; pick a matching arch or image_size',
    )
  if not isinstance(config.skip_bad_files, bool):
    _fail('skip_bad_files', f'must be True or False, got {config.skip_bad_files!r}')
  if not isinstance(config.use_bn, bool):
    _fail('use_bn', f'must be True or False, got {config.use_bn!r}')
  _check_int(config, 'latent_dim', 1)
  for field in (
    'batch_size',
    'num_steps',
    'num_perturbations',
    'log_every',
    'sample_every',
    'checkpoint_every',
    'keep_checkpoints',
    'eval_num_samples',
  ):
    _check_int(config, field, 1)
  for field in ('init_steps', 'warmup_ramp_steps', 'eval_every', 'max_bad_steps'):
    _check_int(config, field, 0)
  _check_int(config, 'seed', 0, 2**32 - 1)  # PRNGKey keeps 32 bits
  if config.batch_size % device_count:
    _fail(
      'batch_size',
      f'{config.batch_size} is not divisible by the {device_count} '
      'devices; use a multiple of the device count',
    )
  if config.batch_size < 2 and config.use_bn:
    _fail('batch_size', 'batch norm needs a batch of at least 2')
  for name in COEFFICIENTS:
    value = config[name]
    if not _is_number(value) or value < 0:
      _fail(name, f'coefficients must be finite numbers >= 0, got {value!r}')
  if config.method == 'vae' and config.beta <= 0:
    _fail('beta', 'the VAE needs beta > 0')
  opt = config.optimizer
  if opt.name not in OPTIMIZERS:
    _fail('optimizer.name', f'unknown optimizer {opt.name!r}; choose one of {OPTIMIZERS}')
  if not _is_number(opt.learning_rate) or opt.learning_rate <= 0:
    _fail('optimizer.learning_rate', f'must be a finite number > 0, got {opt.learning_rate!r}')
  for field in ('momentum', 'b1', 'b2'):
    value = opt[field]
    if not _is_number(value) or not 0 <= value < 1:
      _fail(f'optimizer.{field}', f'must be a number in [0, 1), got {value!r}')
  if config.compute_dtype not in ('float32', 'bfloat16'):
    _fail('compute_dtype', f"must be 'float32' or 'bfloat16', got {config.compute_dtype!r}")
  conv_impl = config.get('conv_impl', 'auto')
  if conv_impl not in CONV_IMPLS:
    _fail('conv_impl', f'must be one of {CONV_IMPLS}, got {conv_impl!r}')
  if config.eval_features not in ('domain', 'inception'):
    _fail('eval_features', f"must be 'domain' or 'inception', got {config.eval_features!r}")
  weights = config.get('eval_inception_weights')
  if weights is not None and not isinstance(weights, str):
    _fail('eval_inception_weights', f'must be a file name (a string), got {weights!r}')
  _validate_extra_terms(config)
