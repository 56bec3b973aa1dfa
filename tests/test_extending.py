"""Extending pga_jax: a term or a method in one file, switched on from the
command line, checked with pga_jax.testing, coefficients as traced values.

The worked examples (experiments/extending/) are checked the way the README
tells a researcher to check their own: routing with `testing.check_routing`,
gradients with `testing.check_gradients` (float64 finite differences), and
20 steps of `pga train`.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.extending import l1_term, wae_mmd
from pga_jax import config as config_lib, methods, testing, user_code
from pga_jax.data import fashion_mnist_offline
from tests import cli_inprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _wae_config(**fields):
  config = config_lib.base_config('experiments.extending.wae_mmd:WAE_MMD', code_dir=REPO)
  config.latent_dim = 4
  for name, value in fields.items():
    config[name] = value
  return config


def test_mmd_matches_a_float64_numpy_computation():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 0.5
  c = 2.0 * 3

  def k(x, y):
    return np.array([[c / (c + np.sum((u - v) ** 2)) for v in y] for u in x])

  n = 6
  expected = (
    (k(a, a).sum() - np.trace(k(a, a))) / (n * (n - 1))
    + (k(b, b).sum() - np.trace(k(b, b))) / (n * (n - 1))
    - 2 * k(a, b).mean()
  )
  got = wae_mmd.mmd(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
  np.testing.assert_allclose(float(got), expected, rtol=1e-5)
  farther = wae_mmd.mmd(jnp.asarray(a, jnp.float32), jnp.asarray(b + 2.0, jnp.float32))
  assert float(farther) > float(got)


def test_wae_mmd_is_one_declaration_with_its_own_coefficient_field():
  config = _wae_config()
  assert config.mmd == 10.0 and config.latent_dim == 4 and config.method.endswith('WAE_MMD')
  config_lib.validate(config)
  method = methods.build_method(config)
  assert [t.name for t in method.terms] == ['rec', 'mmd'] and not method.needs_logvar
  assert set(methods.coefficients(method, config)) == {'mmd'}


def test_wae_mmd_routing_and_gradients():
  config = _wae_config()
  method = methods.build_method(config)
  norms = testing.check_routing(method, config)
  assert norms['mmd']['decoder'] == 0.0 and norms['mmd']['encoder'] > 0.0
  # Every term's training gradient is the gradient of the sum (the MMD does
  # not depend on the decoder), so the whole method's gradient is checkable.
  params, loss = testing.method_loss_fn(_wae_config(conv_impl='xla'), batch=6)
  testing.check_gradients(loss, params, num_directions=2)


def test_l1_term_routing():
  # A term is routed by itself (`methods.route` of its own `updates`), so
  # its routing is checked beside the one term of the AE: the cheapest method
  # to trace, and the sum of the method's terms is checked with it.
  config = testing.small_config('ae')
  norms = testing.check_routing(methods.AE.with_terms(l1_term.L1), config)
  assert norms['rec_l1']['encoder'] > 0.0 and norms['rec_l1']['decoder'] > 0.0


def test_l1_term_gradients_equal_finite_differences():
  ae = testing.small_config('ae', conv_impl='xla')
  ae.extra_terms = ('experiments.extending.l1_term:L1=0.5',)
  ae.code_dir = REPO
  params, loss = testing.method_loss_fn(ae, batch=6)
  testing.check_gradients(loss, params, num_directions=2)


def test_a_term_switched_on_from_the_command_line_form():
  config = testing.small_config('vae')
  config.extra_terms = ('experiments.extending.l1_term:L1@encoder=0.25',)
  method = methods.build_method(config)
  term = method.terms[-1]
  assert (term.name, term.updates, term.value, term.warmup) == ('rec_l1', 'encoder', 0.25, False)
  assert float(methods.coefficients(method, config)['rec_l1']) == 0.25
  norms = testing.check_routing(method, config)
  assert norms['rec_l1']['decoder'] == 0.0


@pytest.mark.parametrize(
  'spec, message',
  [
    ('experiments.extending.l1_term:L1', 'give its coefficient'),
    ('experiments.extending.l1_term:L1=abc', 'is not a number'),
    ('experiments.extending.l1_term:l1_reconstruction=0.1', 'say which parameters it updates'),
    ('experiments.extending.l1_term:L1@sideways=0.1', 'updates must be one of'),
    ('no_such_module_here:f@both=0.1', 'no module named'),
    ('experiments.extending.l1_term:nothing=0.1', "has no 'nothing'"),
    ('experiments.extending.l1_term:L1=-1', 'must be >= 0'),
  ],
)
def test_a_bad_term_spec_is_refused_naming_what_is_wrong(spec, message):
  config = testing.small_config('ae')
  config.extra_terms = (spec,)
  with pytest.raises(config_lib.ConfigError, match='extra_terms') as err:
    config_lib.validate(config)
  assert message in str(err.value)


def test_a_user_module_is_found_in_the_working_directory_and_in_code_dir(tmp_path, monkeypatch):
  name = 'my_terms_for_discovery'
  (tmp_path / f'{name}.py').write_text(
    'import jax.numpy as jnp\n'
    'def l2_codes(model, params, images, rng, config):\n'
    "  return jnp.mean(model.encode(params['encoder'], images).mean ** 2)\n"
  )
  monkeypatch.delitem(sys.modules, name, raising=False)
  spec = f'{name}:l2_codes@encoder=0.1'
  config = testing.small_config('ae')
  config.extra_terms = (spec,)
  with pytest.raises(ValueError, match='no module named'):
    methods.build_method(config)  # neither on the path, nor in the working directory
  config.code_dir = str(tmp_path)
  assert methods.build_method(config).terms[-1].name == 'l2_codes'
  monkeypatch.delitem(sys.modules, name)
  config.code_dir = None
  monkeypatch.chdir(tmp_path)
  assert methods.build_method(config).terms[-1].name == 'l2_codes'
  assert user_code.search_dirs(None) == (str(tmp_path),)


def test_the_projects_terms_switch_on_by_coefficient_in_any_method():
  config = testing.small_config('vae', zn_rec=0.06, nll=0.01)
  method = methods.build_method(config)
  names = [t.name for t in method.terms]
  assert names == ['rec', 'kl', 'zn_rec', 'nll_enc', 'nll_dec']
  norms = testing.check_routing(method, config)
  assert norms['zn_rec']['decoder'] == 0.0 and norms['nll_dec']['encoder'] == 0.0
  ae = testing.small_config('ae', vkld=0.02)
  assert methods.build_method(ae).needs_logvar  # the KL reads the posterior
  assert not methods.build_method(testing.small_config('ae')).needs_logvar


def _loss_and_grad(config, coefficients):
  method, model, params, images = testing._setup(config, 4, 1, 0)  # pylint: disable=protected-access
  rng, step = jax.random.PRNGKey(3), jnp.asarray(5)

  def loss(p, c):
    return methods.method_loss(method, model, p, images, rng, step, config, coefficients=c)[0]

  return params, loss


def test_vmap_over_four_coefficient_settings_equals_four_calls():
  config = testing.small_config('lpga', zh_rec=0.01)
  params, loss = _loss_and_grad(config, None)
  settings = {
    'zn_rec': jnp.asarray([0.06, 0.5, 1e-3, 2.0], jnp.float32),
    'zh_rec': jnp.asarray([0.01, 0.0, 0.3, 1.0], jnp.float32),
    'nll': jnp.asarray([0.015, 0.2, 0.0, 0.05], jnp.float32),
  }
  value_and_grad = jax.jit(jax.value_and_grad(loss))
  batched_values, batched_grads = jax.jit(jax.vmap(jax.value_and_grad(loss), in_axes=(None, 0)))(
    params, settings
  )
  for i in range(4):
    one = {k: v[i] for k, v in settings.items()}
    value, grads = value_and_grad(params, one)
    np.testing.assert_allclose(batched_values[i], value, rtol=1e-5, atol=1e-7)
    testing.assert_trees_close(
      jax.tree_util.tree_map(lambda g, i=i: g[i], batched_grads), grads, rtol=1e-4, atol=1e-7
    )
  # The settings differ, so do the results (the check could fail).
  assert len({round(float(v), 6) for v in batched_values}) == 4


def test_traced_coefficients_equal_the_configs_constants_and_do_not_recompile():
  config = testing.small_config('vpga')
  method = methods.build_method(config)
  params, loss = _loss_and_grad(config, None)
  traced = methods.coefficients(method, config)
  # Equal up to rounding: XLA may fold the constants into other operations in
  # another order than the traced values (seen: 1 ulp apart in float32).
  np.testing.assert_allclose(
    float(jax.jit(loss)(params, None)), float(jax.jit(loss)(params, traced)), rtol=1e-6, atol=0
  )
  traces = []

  def counted(p, c):
    traces.append(1)
    return loss(p, c)

  jitted = jax.jit(counted)
  first = float(jitted(params, traced))
  second = float(jitted(params, {k: v * 3 for k, v in traced.items()}))
  assert len(traces) == 1 and first != second


@pytest.mark.parametrize('ramp', [0, 4])
def test_the_warmup_weight_is_exactly_zero_then_exactly_the_traced_coefficient(ramp):
  config = testing.small_config('lpga', init_steps=10, warmup_ramp_steps=ramp)
  term = next(t for t in methods.LPGA.terms if t.name == 'nll_enc')
  coefficient = {'nll': jnp.float32(0.015)}
  weight = jax.jit(lambda s, c: methods.term_coefficient(term, config, s, c))
  for step in range(0, 11):
    assert float(weight(jnp.asarray(step), coefficient)) == 0.0
  after = 10 + max(ramp, 1)
  assert weight(jnp.asarray(after), coefficient) == np.float32(0.015)
  if ramp:
    assert 0.0 < float(weight(jnp.asarray(11), coefficient)) < np.float32(0.015)


@pytest.mark.parametrize(
  'args',
  [
    ['--config=experiments/extending/wae_mmd.py', '--config.mmd=3'],
    [
      '--config=experiments/configs/quickstart.py',
      '--config.extra_terms=experiments.extending.l1_term:L1=0.1',
    ],
  ],
  ids=['wae_mmd', 'l1_term'],
)
def test_pga_train_runs_the_worked_examples_for_20_steps(args, tmp_path):
  workdir = tmp_path / 'run'
  # Fashion-MNIST from its IDX files: the same images as the tfds dataset the
  # configs name, without TensorFlow's import and tf.data's decoding (~19 s
  # of the test on one CPU); the tfds path has tests of its own (test_data).
  # conv_tiny: the terms do not depend on the network, and the paper's costs
  # ~0.9 s per LPGA step here.
  result = cli_inprocess.pga(
    'train',
    *args,
    '--config.dataset=idx',
    f'--config.data_dir={fashion_mnist_offline.local_files_dir()}',
    '--config.arch=conv_tiny',
    f'--workdir={workdir}',
    '--config.num_steps=20',
    '--config.batch_size=16',
    '--config.log_every=10',
    '--config.sample_every=1000',
    '--config.eval_every=0',
    '--config.checkpoint_every=20',
  )
  assert result.returncode == 0, result.stderr[-3000:]
  log = (workdir / 'pga.log').read_text()
  term = 'mmd=' if 'wae_mmd' in args[0] else 'rec_l1='
  assert '[20] ' in log and term in log
  assert os.path.isdir(workdir / 'checkpoints' / '20')


@pytest.mark.parametrize(
  'flag, expected',
  [
    ('--config.extra_terms=experiments.extending.l1_term:L1', 'give its coefficient'),
    ('--config.extra_terms=not_a_module_anywhere:f@both=0.1', 'no module named'),
    ('--config.method=not_a_module_anywhere:METHOD', 'config.method'),
  ],
  ids=['no_coefficient', 'unknown_module', 'unknown_method'],
)
def test_pga_train_refuses_a_bad_term_or_method_in_one_line(flag, expected, tmp_path):
  from tests.cli_inprocess import pga  # pylint: disable=g-import-not-at-top
  from tests.test_cli_newcomer import the_error  # pylint: disable=g-import-not-at-top

  proc = pga(
    'train', '--config=experiments/configs/quickstart.py', f'--workdir={tmp_path}/run', flag
  )
  the_error(proc, 2, expected)
  assert not os.path.exists(tmp_path / 'run' / 'config.json')
