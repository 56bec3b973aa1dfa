"""Methods: gradient routing, agreement with the reference's two-loss form,
warm-up, adding a term, and jit/non-jit agreement."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pga_jax import config as config_lib
from pga_jax import losses, methods, testing, train_step as ts

sg = jax.lax.stop_gradient
B, H = 8, 4


def make(method_name, **overrides):
  """A method on conv_tiny (conv_mnist's layers, narrower): routing, warm-up and
  the two-loss form do not depend on the widths; the paper's network is
  compared with the reference in test_reference_transcription."""
  config = config_lib.base_config(method_name)
  config.arch = 'conv_tiny'
  config.latent_dim = H
  config.init_steps = 0
  if method_name == 'lvpga':
    config.nll = 1e-2
  config.zh_rec = 0.01 if method_name != 'ae' else 0.0
  for k, v in overrides.items():
    config[k] = v
  loss_fn, model, method = methods.make_loss_fn(config, channels=1)
  params = model.init(jax.random.PRNGKey(0))
  images = jax.random.uniform(jax.random.PRNGKey(1), (B, 28, 28, 1), minval=-1, maxval=1)
  return config, loss_fn, model, method, params, images


def tree_norm(tree):
  return float(optax.global_norm(tree))


def assert_trees_close(a, b, rtol=1e-4, atol=1e-6):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


@pytest.mark.parametrize('method_name', sorted(methods.METHODS))
def test_each_term_reaches_only_the_parameters_it_may_update(method_name):
  config, *_ = make(method_name)
  norms = testing.check_routing(methods.METHODS[method_name], config, batch=B)
  assert set(norms) == {t.name for t in methods.METHODS[method_name].terms}


def test_lpga_gradients_equal_reference_encoder_and_decoder_losses():
  """The reference: encoder params get d(encoder loss), decoder params d(decoder loss).
  Written here without `route`, straight from the reference's description."""
  config, loss_fn, model, method, params, images = make('lpga')
  rng, step = jax.random.PRNGKey(3), jnp.asarray(5000)
  zn = jax.random.normal(methods.term_rng(rng, 'zn_rec'), (B, H))
  eps = 1e-2 * np.sqrt(H)
  d = losses.sample_sphere(methods.term_rng(rng, 'nll_dec'), (1, B, H), eps)[0]

  def parts(enc, dec):
    h = lambda z: model.encode(enc, model.decode(dec, z)).mean
    z = model.encode(enc, images).mean
    rec = jnp.mean((model.decode(dec, z) - images) ** 2)
    zh = sg(z)
    lrn = jnp.mean((h(zn) - zn) ** 2)
    lrh = jnp.mean((h(zh) - zh) ** 2)
    nll_e = jnp.mean(0.5 * jnp.sum(z**2, 1) + 0.5 * H * np.log(2 * np.pi)) / H
    nll_d = jnp.mean(H / 2 * jnp.log(jnp.sum((h(zh + d) - h(zh)) ** 2, 1) / eps**2)) / H
    enc_loss = rec + config.zn_rec * lrn + config.zh_rec * lrh + config.nll * nll_e
    dec_loss = rec + config.nll * nll_d
    return enc_loss, dec_loss

  assert_routed_like_two_losses(parts, loss_fn, params, images, rng, step)


def assert_routed_like_two_losses(parts, loss_fn, params, images, rng, step):
  """Our one routed loss's gradient w.r.t. the encoder equals d enc_loss / d
  encoder, w.r.t. the decoder d dec_loss / d decoder (`parts(enc, dec) ->
  (enc_loss, dec_loss)`, written out independently)."""
  g_enc = jax.grad(lambda e: parts(e, params['decoder'])[0])(params['encoder'])
  g_dec = jax.grad(lambda d_: parts(params['encoder'], d_)[1])(params['decoder'])
  ours = jax.grad(lambda p: loss_fn(p, images, rng, step)[0])(params)
  assert_trees_close(ours['encoder'], g_enc)
  assert_trees_close(ours['decoder'], g_dec)


def test_vpga_gradients_equal_reference_encoder_and_decoder_losses():
  config, loss_fn, model, method, params, images = make('vpga')
  rng, step = jax.random.PRNGKey(4), jnp.asarray(0)
  zn = jax.random.normal(methods.term_rng(rng, 'zn_rec'), (B, H))
  n = jax.random.normal(methods.term_rng(rng, 'vrec'), (B, H))

  def parts(enc, dec):
    h_live = lambda z: model.encode(enc, model.decode(dec, z)).mean
    h_frozen_enc = lambda z: model.encode(sg(enc), model.decode(dec, z)).mean
    mu, logvar = model.encode(enc, images)
    rec = jnp.mean((model.decode(dec, mu) - images) ** 2)
    lrn = jnp.mean((h_live(zn) - zn) ** 2)
    lrh = jnp.mean((h_live(sg(mu)) - sg(mu)) ** 2)
    m = sg(mu)
    s = jnp.sqrt(jnp.mean(m**2, 0))
    vrec = jnp.mean(((h_frozen_enc(m) - h_frozen_enc(m + jnp.exp(0.5 * logvar) * n)) / s) ** 2)
    kl = jnp.mean(-0.5 * (1 + logvar - mu**2 - jnp.exp(logvar)))
    enc_loss = (
      rec + config.zn_rec * lrn + config.zh_rec * lrh + config.vrec * vrec + config.vkld * kl
    )
    dec_loss = rec + config.vrec * vrec
    return enc_loss, dec_loss

  assert_routed_like_two_losses(parts, loss_fn, params, images, rng, step)


def test_warmup_switches_off_every_term_but_reconstruction():
  """The reference switches on with `global_step > init_steps`: the step taken
  when `init_steps` steps have been applied is still L_r alone."""
  config, loss_fn, model, method, params, images = make('lpga', init_steps=100)
  rng = jax.random.PRNGKey(5)
  x_rec = model.decode(params['decoder'], model.encode(params['encoder'], images).mean)
  rec_only = float(jnp.mean((x_rec - images) ** 2))
  for step in (0, 99, 100):
    loss_before, metrics = loss_fn(params, images, rng, jnp.asarray(step))
    np.testing.assert_allclose(loss_before, rec_only, rtol=1e-6)
  assert float(metrics['zn_rec']) > 0  # computed and logged, but weighted 0
  loss_after, metrics = loss_fn(params, images, rng, jnp.asarray(101))
  expected = rec_only + sum(
    config[c] * float(metrics[n])
    for n, c in [('zn_rec', 'zn_rec'), ('zh_rec', 'zh_rec'), ('nll_enc', 'nll'), ('nll_dec', 'nll')]
  )
  np.testing.assert_allclose(loss_after, expected, rtol=1e-5)
  assert float(methods.warmup_weight(100, 100)) == 0.0
  assert float(methods.warmup_weight(101, 100)) == 1.0


def test_warmup_ramp_raises_the_coefficients_linearly_after_init_steps():
  config, loss_fn, model, method, params, images = make('lpga', init_steps=100, warmup_ramp_steps=4)
  rng = jax.random.PRNGKey(5)
  rec_only, _ = loss_fn(params, images, rng, jnp.asarray(100))
  for step, share in ((101, 0.25), (102, 0.5), (103, 0.75), (104, 1.0), (500, 1.0)):
    loss, metrics = loss_fn(params, images, rng, jnp.asarray(step))
    weighted = sum(
      config[c] * float(metrics[n])
      for n, c in [
        ('zn_rec', 'zn_rec'),
        ('zh_rec', 'zh_rec'),
        ('nll_enc', 'nll'),
        ('nll_dec', 'nll'),
      ]
    )
    np.testing.assert_allclose(loss, float(rec_only) + share * weighted, rtol=1e-5)


def decoded_prior_total_variation(model, params, images, rng, config):
  """A custom term: total variation of images decoded from the prior."""
  z = jax.random.normal(rng, (images.shape[0], model.latent_dim))
  x = model.decode(params['decoder'], z)
  return jnp.mean(jnp.abs(x[:, 1:] - x[:, :-1])) + jnp.mean(jnp.abs(x[:, :, 1:] - x[:, :, :-1]))


def test_adding_a_custom_term_is_one_function_and_one_coefficient():
  config, base_loss_fn, model, method, params, images = make('lpga')
  config.tv = 0.5
  config.extra_terms = (
    {
      'name': 'tv',
      'fn': 'tests.test_methods:decoded_prior_total_variation',
      'updates': 'decoder',
      'coeff': 'tv',
    },
  )
  config_lib.validate(config)
  loss_fn, _, extended = methods.make_loss_fn(config, channels=1)
  assert [t.name for t in extended.terms][-1] == 'tv'
  rng, step = jax.random.PRNGKey(6), jnp.asarray(10)
  base, _ = base_loss_fn(params, images, rng, step)
  total, metrics = loss_fn(params, images, rng, step)
  tv_value = decoded_prior_total_variation(
    model, params, images, methods.term_rng(rng, 'tv'), config
  )
  np.testing.assert_allclose(total, base + 0.5 * tv_value, rtol=1e-6)
  np.testing.assert_allclose(metrics['tv'], tv_value, rtol=1e-6)
  g_base = jax.grad(lambda p: base_loss_fn(p, images, rng, step)[0])(params)
  g_new = jax.grad(lambda p: loss_fn(p, images, rng, step)[0])(params)
  assert_trees_close(g_new['encoder'], g_base['encoder'])  # decoder-only term
  g_tv = jax.grad(
    lambda d: decoded_prior_total_variation(
      model,
      {'encoder': params['encoder'], 'decoder': d},
      images,
      methods.term_rng(rng, 'tv'),
      config,
    )
  )(params['decoder'])
  assert_trees_close(
    g_new['decoder'], jax.tree_util.tree_map(lambda a, b: a + 0.5 * b, g_base['decoder'], g_tv)
  )


def test_extra_term_with_unknown_coefficient_is_rejected():
  config = config_lib.base_config('lpga')
  config.extra_terms = ({'name': 'x', 'fn': 'a:b', 'updates': 'decoder', 'coeff': 'nope'},)
  with pytest.raises(config_lib.ConfigError, match='extra_terms'):
    config_lib.validate(config)


def one_step_setup(method_name):
  """(loss_fn, its args, train step, initial state, images) of `make(method_name)`."""
  config, loss_fn, model, _, params, images = make(method_name)
  optimizer = ts.make_optimizer(config)
  state = ts.init_train_state(model, optimizer, jax.random.PRNGKey(7))
  step_fn = ts.make_train_step(loss_fn, optimizer)
  args = (params, images, jax.random.PRNGKey(8), jnp.asarray(3))
  return loss_fn, args, step_fn, state, images


@functools.lru_cache(maxsize=None)
def op_by_op(method_name):
  """(loss, metrics, state after one step) of `one_step_setup(method_name)`,
  evaluated op by op (`jax.disable_jit`): the independent side of
  JitAgreementTest, computed once for both of its variants."""
  loss_fn, args, step_fn, state, images = one_step_setup(method_name)
  with jax.disable_jit():
    loss, metrics = loss_fn(*args)
    new_state, _ = step_fn(state, images)
  return loss, metrics, new_state


class JitAgreementTest(chex.TestCase):
  """Losses and a whole train step give the same numbers with and without jit."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_lpga_and_vpga(self):
    for method_name in ('lpga', 'vpga'):
      loss_fn, args, step_fn, state, images = one_step_setup(method_name)
      eager_loss, eager_metrics, eager_state = op_by_op(method_name)
      loss, metrics = self.variant(loss_fn)(*args)
      new_state, step_metrics = self.variant(step_fn)(state, images)
      np.testing.assert_allclose(loss, eager_loss, rtol=1e-5)
      for name in eager_metrics:
        np.testing.assert_allclose(metrics[name], eager_metrics[name], rtol=1e-4, atol=1e-6)
      assert_trees_close(new_state.params, eager_state.params, rtol=1e-4, atol=1e-6)
      assert int(new_state.step) == 1 and float(step_metrics['finite']) == 1.0
