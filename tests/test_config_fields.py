"""The config-field table (pga_jax/config_fields.py) and what is derived from it.

Expected values here are written out from docs/reference_code.md
("Published settings") and from what a resumed run may change, not read back
from the table.
"""

import ml_collections
import pytest

from pga_jax import checkpointing, config as config_lib, config_fields, method_override, methods

# The reference's published settings (MNIST defaults), and the paper's VAE
# baseline (SGD as every model of the paper, beta 0.1).
REFERENCE = {
  'ae': dict(latent_dim=12, init_steps=0, optimizer=('sgd', 0.1)),
  'vae': dict(latent_dim=32, beta=0.1, init_steps=0, optimizer=('sgd', 0.1)),
  'lpga': dict(latent_dim=12, zn_rec=6e-2, nll=1.5e-2, init_steps=3000, optimizer=('sgd', 0.1)),
  'vpga': dict(
    latent_dim=32, zn_rec=6e-2, vrec=1e-2, vkld=2e-2, init_steps=0, optimizer=('sgd', 0.1)
  ),
  'lvpga': dict(
    latent_dim=32, zn_rec=6e-2, vrec=2e-2, vkld=2e-2, init_steps=3000, optimizer=('sgd', 0.1)
  ),
}
LOSS_COEFFICIENTS = ('zn_rec', 'zh_rec', 'nll', 'vrec', 'vkld', 'beta')

# What a resumed run must keep: it decides the model, the data and its order,
# the optimizer or the loss. Everything else may change between sessions.
MUST_KEEP = {
  'method',
  'dataset',
  'image_size',
  'channels',
  'arch',
  'use_bn',
  'latent_dim',
  'compute_dtype',
  'batch_size',
  'seed',
  'optimizer.name',
  'optimizer.learning_rate',
  'optimizer.momentum',
  'optimizer.b1',
  'optimizer.b2',
  'init_steps',
  'warmup_ramp_steps',
  'num_perturbations',
  'extra_terms',
} | set(LOSS_COEFFICIENTS)
MAY_CHANGE = {
  'data_dir',
  'skip_bad_files',
  'conv_impl',
  'num_steps',
  'log_every',
  'sample_every',
  'checkpoint_every',
  'keep_checkpoints',
  'keep_checkpoint_every',
  'eval_every',
  'eval_num_samples',
  'eval_features',
  'eval_inception_weights',
  'max_bad_steps',
}
# A valid value different from every method's default, per field.
OTHER_VALUE = {
  'method': 'ae',
  'dataset': 'fashion_mnist',
  'image_size': 32,
  'channels': 3,
  'arch': 'conv_32',
  'use_bn': True,
  'latent_dim': 7,
  'compute_dtype': 'bfloat16',
  'batch_size': 32,
  'seed': 9,
  'optimizer.name': 'adam',
  'optimizer.learning_rate': 0.03,
  'optimizer.momentum': 0.5,
  'optimizer.b1': 0.9,
  'optimizer.b2': 0.99,
  'init_steps': 7,
  'warmup_ramp_steps': 11,
  'num_perturbations': 3,
  'extra_terms': ({'name': 'x', 'fn': 'a:b', 'updates': 'both'},),
  'data_dir': '/elsewhere',
  'skip_bad_files': True,
  'conv_impl': 'xla',
  'num_steps': 123,
  'log_every': 5,
  'sample_every': 6,
  'checkpoint_every': 8,
  'keep_checkpoints': 9,
  'keep_checkpoint_every': 4,
  'eval_every': 10,
  'eval_num_samples': 100,
  'eval_features': 'inception',
  'eval_inception_weights': '/w.npz',
  'max_bad_steps': 2,
  **{name: 0.123 for name in LOSS_COEFFICIENTS},
}


def _set(config, path, value):
  *parents, leaf = path.split('.')
  for parent in parents:
    config = config[parent]
  config[leaf] = value


def test_every_field_is_in_the_table_once_and_the_known_ones_classified():
  """The fields named above keep their resume rule; a field added to the table
  later needs no entry here (the next test checks its rule works)."""
  names = [f.name for f in config_fields.FIELDS]
  assert len(names) == len(set(names))
  assert MUST_KEEP | MAY_CHANGE <= set(names)
  assert MUST_KEEP <= set(config_fields.STRUCTURAL)
  assert MAY_CHANGE.isdisjoint(config_fields.STRUCTURAL)


def _another_valid_value(field):
  """A value of `field` other than LPGA's default that its check accepts:
  OTHER_VALUE's, or one derived from the default's type."""
  if field.name in OTHER_VALUE:
    return OTHER_VALUE[field.name]
  default = field.default_for('lpga')
  if isinstance(default, bool):
    tries = [not default]
  elif hasattr(field.check, 'choices'):
    tries = [c for c in field.check.choices if c != default]
  elif isinstance(default, int):
    tries = [default + 1, default + 2, 2 * default + 3]
  elif isinstance(default, float):
    tries = [default + 0.125, default * 0.5, 0.375]
  else:
    tries = ['/elsewhere']
  valid = [t for t in tries if field.check(t) is None]
  assert valid, f'give OTHER_VALUE a valid value for the field {field.name!r}'
  return valid[0]


@pytest.mark.parametrize('field', config_fields.FIELDS, ids=lambda f: f.name)
def test_each_fields_resume_rule_follows_its_structural_flag(field):
  if field.name == 'method':
    return  # changing the method is refused by its own check, before the resume rule
  stored = config_lib.base_config('lpga')
  given = config_lib.base_config('lpga')
  _set(given, field.name, _another_valid_value(field))
  if field.structural:
    with pytest.raises(checkpointing.WorkdirError, match=f'{field.name}: stored'):
      checkpointing.check_compatible(stored, given)
  else:
    checkpointing.check_compatible(stored, given)


def test_a_stored_config_is_brought_up_to_date_when_loaded(tmp_path):
  """config.json of a run stored before the later fields: load_config gives
  every field, with the defaults such runs ran with, readable as attributes."""
  import json  # pylint: disable=g-import-not-at-top

  stored = config_lib.base_config('lpga').to_dict()
  for name in config_fields.ADDED_LATER:
    del stored[name]
  (tmp_path / checkpointing.CONFIG_FILE).write_text(json.dumps(stored))
  loaded = checkpointing.load_config(str(tmp_path))
  assert (loaded.warmup_ramp_steps, loaded.conv_impl, loaded.compute_dtype) == (
    0,
    'auto',
    'float32',
  )
  assert tuple(loaded.extra_terms) == () and loaded.keep_checkpoint_every == 0
  assert loaded.eval_inception_weights is None
  config_lib.validate(loaded)
  checkpointing.check_compatible(loaded, config_lib.base_config('lpga'))


@pytest.mark.parametrize('method', sorted(REFERENCE))
def test_base_config_has_the_reference_defaults_of_each_method(method):
  config = config_lib.base_config(method)
  expected = dict(REFERENCE[method])
  name, lr = expected.pop('optimizer')
  assert (config.optimizer.name, config.optimizer.learning_rate) == (name, lr)
  for coefficient in LOSS_COEFFICIENTS:
    assert config[coefficient] == expected.pop(coefficient, 0.0), coefficient
  for field, value in expected.items():
    assert config[field] == value, field
  config_lib.validate(config)


def test_method_override_changes_exactly_the_fields_whose_reference_default_differs():
  def differing(names):
    found = set()
    for field in config_fields.FIELDS:
      values = {repr(config_fields.get(config_lib.base_config(m), field.name)) for m in names}
      if field.name != 'method' and len(values) > 1:
        found.add(field.name)
    return found

  reference = differing(REFERENCE)
  assert set(method_override.method_fields(tuple(REFERENCE))) == reference
  assert reference == {
    'latent_dim',
    'beta',
    'zn_rec',
    'nll',
    'vrec',
    'vkld',
    'init_steps',
  }  # every method trains with SGD at the same learning rate (the paper's Section 3)
  # Every declared method, also one added later.
  assert set(method_override.method_fields()) == differing(methods.METHODS)


@pytest.mark.parametrize('field', sorted(MUST_KEEP))
def test_resume_refuses_a_change_of_a_field_that_must_be_kept(field):
  stored = config_lib.base_config('lpga')
  given = config_lib.base_config('lpga')
  _set(given, field, OTHER_VALUE[field])
  with pytest.raises(checkpointing.WorkdirError, match=f'{field}: stored'):
    checkpointing.check_compatible(stored, given)


@pytest.mark.parametrize('field', sorted(MAY_CHANGE))
def test_resume_accepts_a_change_of_any_other_field(field):
  stored = config_lib.base_config('lpga')
  given = config_lib.base_config('lpga')
  _set(given, field, OTHER_VALUE[field])
  checkpointing.check_compatible(stored, given)


def _stored_before(*absent):
  """A stored config (as read back from config.json) that predates `absent`."""
  stored = config_lib.base_config('lpga').to_dict()
  for name in absent:
    del stored[name]
  return ml_collections.ConfigDict(stored)


def test_a_run_stored_before_later_fields_existed_resumes_with_their_defaults():
  stored = _stored_before('warmup_ramp_steps', 'conv_impl', 'extra_terms', 'compute_dtype')
  config_lib.validate(stored)
  checkpointing.check_compatible(stored, config_lib.base_config('lpga'))
  ramped = config_lib.base_config('lpga')
  ramped.warmup_ramp_steps = 500  # the old run had no ramp: this is another run
  with pytest.raises(checkpointing.WorkdirError, match='warmup_ramp_steps: stored 0, given 500'):
    checkpointing.check_compatible(stored, ramped)


def test_a_stored_config_missing_a_field_that_always_existed_is_named():
  stored = _stored_before('latent_dim')
  with pytest.raises(config_lib.ConfigError, match='config.latent_dim: is missing'):
    config_lib.validate(stored)
  with pytest.raises(checkpointing.WorkdirError, match='latent_dim: stored None, given 12'):
    checkpointing.check_compatible(stored, config_lib.base_config('lpga'))


@pytest.mark.parametrize(
  'kwargs, message',
  [
    (dict(name=''), 'non-empty string'),
    (dict(updates='all'), 'updates must be one of'),
    (dict(fn='not a function'), 'fn must be a function'),
    (dict(coeff=3), 'coeff must be a config field name'),
    (dict(warmup='yes'), 'warmup must be True or False'),
  ],
)
def test_a_term_checks_its_own_fields(kwargs, message):
  fields = dict(name='t', fn=lambda *a: 0.0, updates='both', coeff=None, warmup=True)
  fields.update(kwargs)
  with pytest.raises(ValueError, match=message):
    methods.Term(**fields)


@pytest.mark.parametrize('name', ['loss', 'grad_norm', 'rec', 'nll_dec'])
def test_a_term_may_not_take_the_name_of_a_metric_or_another_term(name):
  term = methods.Term(name, lambda *a: 0.0, 'decoder')
  with pytest.raises(ValueError, match='choose another name'):
    methods.LPGA.with_terms(term)
