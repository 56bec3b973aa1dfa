"""Property-based tests of the config validator.

Random configs, valid and invalid, for many fields: every invalid one is
rejected with a ConfigError naming the field; every valid one builds the model
and its train step; and (fewer, since each compiles) valid ones run one jitted
step of a tiny model whose update is finite and applied.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings, strategies as st

from pga_jax import config as config_lib, methods, train_step as ts


def mean_latent(model, params, images, rng, config):
  """An extra term for the generated configs: squared mean of the encodings."""
  del rng, config
  return jnp.mean(model.encode(params['encoder'], images).mean) ** 2


GOOD_TERM = {
  'name': 'mean_latent',
  'fn': 'tests.test_config_property:mean_latent',
  'updates': 'encoder',
  'coeff': 'mean_latent_coeff',
}

NON_INTS = [True, 2.5, '4', None]
NON_FINITE = [math.nan, math.inf, -math.inf]


@st.composite
def valid_configs(draw):
  """A plain dict of a valid config of a tiny conv_mnist model."""
  method = draw(st.sampled_from(config_lib.METHOD_NAMES))
  d = config_lib.base_config(method).to_dict()
  dataset = draw(st.sampled_from(['mnist', 'fashion_mnist', 'idx', 'folder']))
  d.update(
    dataset=dataset,
    arch='conv_mnist',
    image_size=28,
    data_dir=draw(st.sampled_from([None, '/data']))
    if dataset in ('mnist', 'fashion_mnist')
    else '/data',
    channels=draw(st.sampled_from([1, 3])) if dataset == 'folder' else 1,
  )
  d['latent_dim'] = draw(st.integers(1, 8))
  d['use_bn'] = draw(st.booleans())
  d['batch_size'] = draw(st.integers(2, 4))
  d['compute_dtype'] = draw(st.sampled_from(['float32', 'bfloat16']))
  d['seed'] = draw(st.integers(0, 2**32 - 1))
  small_int = lambda lo: st.integers(lo, 10**6)
  for field in (
    'num_steps',
    'log_every',
    'sample_every',
    'checkpoint_every',
    'keep_checkpoints',
    'eval_num_samples',
  ):
    d[field] = draw(small_int(1))
  for field in ('init_steps', 'eval_every', 'max_bad_steps'):
    d[field] = draw(st.integers(0, 5))
  d['num_perturbations'] = draw(st.integers(1, 2))
  coefficient = st.one_of(st.just(0.0), st.floats(0.0, 0.2), st.integers(0, 1))
  for name in config_lib.COEFFICIENTS:
    d[name] = draw(coefficient)
  if method == 'vae':
    d['beta'] = draw(st.floats(1e-3, 1.0))
  if method in ('lpga', 'lvpga') and d['nll'] == 0:
    d['nll'] = draw(st.sampled_from([0.0, 1e-2]))
  d['optimizer'] = dict(
    name=draw(st.sampled_from(config_lib.OPTIMIZERS)),
    learning_rate=draw(st.floats(1e-5, 0.5)),
    momentum=draw(st.floats(0.0, 0.99)),
    b1=draw(st.floats(0.0, 0.99)),
    b2=draw(st.floats(0.5, 0.9999)),
  )
  d['skip_bad_files'] = draw(st.booleans())
  d['eval_features'] = draw(st.sampled_from(['domain', 'inception']))
  if draw(st.booleans()):
    d['mean_latent_coeff'] = draw(st.floats(0.0, 1.0))
    d['extra_terms'] = (dict(GOOD_TERM, warmup=draw(st.booleans())),)
  return d


def _set(d, path, value):
  *parents, leaf = path.split('.')
  for p in parents:
    d = d[p]
  d[leaf] = value


# (field path set, bad values, names one of which the error must mention). A
# callable value is applied to the config dict instead of a plain assignment.
def _folder(d):
  d.update(dataset='folder', data_dir='/data')


def _extra(spec_changes, **config_changes):
  def mutate(d, _):
    d.update(config_changes)
    d['mean_latent_coeff'] = d.get('mean_latent_coeff', 0.5)
    spec = dict(GOOD_TERM)
    spec.update(spec_changes)
    for key, value in list(spec.items()):
      if value is KeyError:
        del spec[key]
    d['extra_terms'] = (spec,)

  return mutate


MUTATIONS = (
  [
    ('method', ['gan', '', 'LPGA', None, 3], ['method']),
    ('arch', ['vgg', 'conv_64', None], ['arch']),
    ('dataset', ['imagenet', '', None], ['dataset']),
    ('data_dir', [None, ''], ['data_dir'], _folder),
    ('data_dir', [3, ['/data']], ['data_dir']),
    ('image_size', [0, -1, True, 2.5, None], ['image_size'], _folder),
    ('image_size', [32, 64], ['image_size'], _folder),  # named by the arch message
    ('channels', [0, 2, 4, True, '1', None], ['channels'], _folder),
    ('latent_dim', [0, -1] + NON_INTS, ['latent_dim']),
    ('batch_size', [0, -2] + NON_INTS, ['batch_size']),
    ('use_bn', ['yes', 1, None], ['use_bn']),
    ('skip_bad_files', ['no', 0, None], ['skip_bad_files']),
    ('compute_dtype', ['float16', None], ['compute_dtype']),
    ('conv_impl', ['cudnn', '', None, True], ['conv_impl']),
    ('seed', [-1, 2**32, 2**64, 1.0, True], ['seed']),
    ('num_steps', [0, -1] + NON_INTS, ['num_steps']),
    ('num_perturbations', [0] + NON_INTS, ['num_perturbations']),
    ('log_every', [0] + NON_INTS, ['log_every']),
    ('sample_every', [0] + NON_INTS, ['sample_every']),
    ('checkpoint_every', [0] + NON_INTS, ['checkpoint_every']),
    ('keep_checkpoints', [0] + NON_INTS, ['keep_checkpoints']),
    ('eval_num_samples', [0] + NON_INTS, ['eval_num_samples']),
    ('init_steps', [-1] + NON_INTS, ['init_steps']),
    ('eval_every', [-3] + NON_INTS, ['eval_every']),
    ('max_bad_steps', [-1] + NON_INTS, ['max_bad_steps']),
    ('eval_features', ['fid', None], ['eval_features']),
    ('optimizer.name', ['rmsprop', None], ['optimizer.name']),
    (
      'optimizer.learning_rate',
      [0, -0.1, True, None, 'x'] + NON_FINITE,
      ['optimizer.learning_rate'],
    ),
    ('optimizer.momentum', [1.0, 1.5, -0.1, True, None] + NON_FINITE, ['optimizer.momentum']),
    ('optimizer.b1', [1.0, -0.5, None, math.nan], ['optimizer.b1']),
    ('optimizer.b2', [1.0, 2.0, None, math.inf], ['optimizer.b2']),
  ]
  + [(name, [-0.1, True, None, 'x'] + NON_FINITE, [name]) for name in config_lib.COEFFICIENTS]
  + [
    (
      'extra_terms',
      [
        _extra({'updates': 'all'}),
        _extra({'fn': 'no_such_module:f'}),
        _extra({'fn': 'tests.test_config_property'}),
        _extra({'fn': 'tests.test_config_property:no_such_function'}),
        _extra({'fn': 'tests.test_config_property:GOOD_TERM'}),
        _extra({'name': 'loss'}),
        _extra({'name': 'rec'}),
        _extra({'name': ''}),
        _extra({'name': KeyError}),
        _extra({'fn': KeyError}),
        _extra({'updates': KeyError}),
        _extra({'coeff': 'not_a_field'}),
        _extra({'warmup': 'yes'}),
        'not a tuple',
        ('not a dict',),
      ],
      ['extra_terms'],
    ),
    (
      'mean_latent_coeff',
      [_extra({}, mean_latent_coeff=v) for v in (-1.0, math.nan, 'x')],
      ['mean_latent_coeff'],
    ),
  ]
)


@st.composite
def mutations(draw):
  """Zero, one or two invalid fields: [(names the error may mention, mutate(d))]."""
  count = draw(st.sampled_from([0, 0, 1, 1, 1, 2]))
  chosen = []
  for _ in range(count):
    entry = draw(st.sampled_from(MUTATIONS))
    path, values, names = entry[:3]
    prepare = entry[3] if len(entry) > 3 else None
    value = draw(st.sampled_from(values))
    chosen.append((names, path, value, prepare))
  return chosen


def apply(d, chosen):
  for _, path, value, prepare in chosen:
    if prepare is not None:
      prepare(d)
    if callable(value):
      value(d, None)
    else:
      _set(d, path, value)
  return ml_collections.ConfigDict(d)


def build_step(config):
  _, _, channels = config_lib.image_shape(config)
  loss_fn, model, _ = methods.make_loss_fn(config, channels)
  optimizer = ts.make_optimizer(config)
  return model, optimizer, ts.make_train_step(loss_fn, optimizer), channels


@settings(
  max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(base=valid_configs(), chosen=mutations())
def test_validator_rejects_every_invalid_config_by_name_and_builds_every_valid_one(base, chosen):
  config = apply(base, chosen)
  if chosen:
    with pytest.raises(config_lib.ConfigError) as info:
      config_lib.validate(config)
    message = str(info.value)
    assert message.startswith('config.') and '\n' not in message
    names = {n for names, *_ in chosen for n in names}
    assert any(n in message for n in names), (message, names)
    return
  config_lib.validate(config)
  # Valid: the model and its whole train step build, traced abstractly (no compile).
  model, optimizer, step, channels = build_step(config)
  state = jax.eval_shape(
    lambda r: ts.init_train_state(model, optimizer, r), jax.random.PRNGKey(config.seed)
  )
  images = jax.ShapeDtypeStruct((config.batch_size, 28, 28, channels), jnp.float32)
  new_state, metrics = jax.eval_shape(step, state, images)
  assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state)
  assert {'loss', 'finite', 'grad_norm'} <= set(metrics)


# The same three configs every run (a fixed seed): each compiles a train step,
# and a config drawn afresh is a program the compilation cache has never
# seen (the test took 22 to 47 s across full runs, one CPU each). Hypothesis
# draws its simplest example first (the AE, latent_dim 1, float32, SGD); seed
# 1's other two are LVPGA with batch norm, bfloat16, Adam and an extra term,
# and LPGA with two perturbations. The validator test above, which compiles
# nothing, draws new configs every run.
@settings(
  max_examples=3, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@seed(1)
@given(base=valid_configs())
def test_valid_configs_run_one_jitted_step_of_a_tiny_model(base):
  config = ml_collections.ConfigDict(base)
  config_lib.validate(config)
  model, optimizer, step, channels = build_step(config)
  state = ts.init_train_state(model, optimizer, jax.random.PRNGKey(config.seed))
  images = jax.random.uniform(
    jax.random.PRNGKey(1), (config.batch_size, 28, 28, channels), minval=-1.0, maxval=1.0
  )
  new_state, metrics = jax.jit(step)(state, images)
  metrics = jax.device_get(metrics)
  assert int(new_state.step) == 1
  assert metrics['finite'] == 1.0, metrics
  assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(new_state.params))
