"""The speed paths compute what the plain definitions compute.

- the shared passes (`passes.SharedPasses`, `fast=True`) against
  every term evaluated on its own (`fast=False`): losses, metrics, gradients;
- the per-phase transposed convolution against `lax.conv_transpose`;
- the train step's cheap non-finite guard against an optax update by hand;
- the bfloat16 compute dtype against float32;
- the train loop traces (compiles) its step once.
"""

import chex
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pga_jax import config as config_lib, conv_forms, methods, testing, train_step as ts
from pga_jax.conv_forms import forms
from pga_jax.models import AutoEncoder
from pga_jax import data
from tests import helpers

B, H = 8, 4


def make(method_name, fast, use_bn=False, **overrides):
  """A config, its loss, model and method; `conv_tiny` (conv_mnist's layers at
  1/8 of the widths) unless `overrides` name another arch: the paths compared
  here compute the same whatever the widths."""
  config = config_lib.base_config(method_name)
  config.arch = 'conv_tiny'
  config.latent_dim = H
  config.use_bn = use_bn
  config.init_steps = 0
  if method_name in ('lpga', 'lvpga'):
    config.nll = 1e-2
  if method_name != 'ae' and method_name != 'vae':
    config.zh_rec = 0.01  # on, so every term of the method is in the sum
  for k, v in overrides.items():
    config[k] = v
  loss_fn, model, method = methods.make_loss_fn(config, channels=1, fast=fast)
  return config, loss_fn, model, method


def images():
  return jax.random.uniform(jax.random.PRNGKey(1), (B, 28, 28, 1), minval=-1, maxval=1)


@pytest.mark.parametrize('use_bn', [False, True])
@pytest.mark.parametrize('method_name', sorted(methods.METHODS))
def test_shared_encoder_pass_gives_the_plain_losses_metrics_and_gradients(method_name, use_bn):
  config, *_ = make(method_name, True, use_bn)
  testing.check_fast_path(config, batch=B)


class CountingModel:
  """An AutoEncoder that counts how often the data batch is encoded."""

  def __init__(self, model, data):
    self.model, self.data, self.data_encodes = model, data, 0

  def __getattr__(self, name):
    return getattr(self.model, name)

  def encode(self, encoder_params, images, stat_rows=None):
    if images is self.data:
      self.data_encodes += 1
    return self.model.encode(encoder_params, images, stat_rows)

  # The model's own compositions, with their encodes counted.
  reconstruct = AutoEncoder.reconstruct
  encode_decode_at_codes = AutoEncoder.encode_decode_at_codes


@pytest.mark.parametrize(
  'method_name,plain_calls,fast_calls',
  [
    # rec, zh_rec, nll_enc, nll_dec's codes and its centre's codes: one pass
    ('lpga', 5, 1),
    # rec, zh_rec, vrec's sigma and its centre's codes, vkld: one pass
    ('vpga', 5, 1),
    # rec, zh_rec, vrec's sigma and its centre's codes, vkld, nll_enc: one pass
    ('lvpga', 6, 1),
  ],
)
def test_terms_share_one_encoder_pass_over_the_data(method_name, plain_calls, fast_calls):
  config, _, model, method = make(method_name, True)
  params = model.init(jax.random.PRNGKey(0))
  x = images()
  for fast, expected in ((False, plain_calls), (True, fast_calls)):
    counting = CountingModel(model, x)
    jax.eval_shape(
      lambda p: methods.method_loss(
        method, counting, p, x, jax.random.PRNGKey(0), jnp.asarray(0), config, fast=fast
      ),
      params,
    )
    assert counting.data_encodes == expected, (fast, counting.data_encodes)


def test_shared_encoder_pass_removes_work_from_the_compiled_step():
  """XLA's own FLOP count: the VPGA step without the shared pass does more work."""
  flops = {}
  for fast in (False, True):
    config, loss_fn, model, _ = make('vpga', fast, zh_rec=0.0)
    params = model.init(jax.random.PRNGKey(0))
    grad = jax.jit(
      jax.grad(lambda p: loss_fn(p, images(), jax.random.PRNGKey(0), jnp.asarray(0))[0])
    )
    cost = grad.lower(params).compile().cost_analysis()
    flops[fast] = (cost[0] if isinstance(cost, list) else cost)['flops']
  # Three encoder backward passes over the data fewer (rec, vrec's sigma, KL
  # -> one): more than 10% of the step.
  assert flops[True] < 0.9 * flops[False], flops


@pytest.mark.parametrize('use_bn', [False, True])
def test_decode_shared_routes_like_two_decoder_calls_with_less_work(use_bn):
  from pga_jax import passes  # pylint: disable=g-import-not-at-top

  model = AutoEncoder('conv_mnist', H, 1, use_bn=use_bn)
  dec = model.init(jax.random.PRNGKey(0))['decoder']
  z = jax.random.normal(jax.random.PRNGKey(1), (B, H))
  c1, c2 = jax.random.normal(jax.random.PRNGKey(2), (2, B, 28, 28, 1))

  def separate(d, z_):
    return jnp.sum(c1 * model.decode(d, z_)) + jnp.sum(
      jnp.sin(c2 * model.decode(d, jax.lax.stop_gradient(z_)))
    )

  def shared(d, z_):
    x1, x2 = passes.decode_shared(model, d, z_)
    return jnp.sum(c1 * x1) + jnp.sum(jnp.sin(c2 * x2))

  grads = {}
  flops = {}
  for name, fn in (('separate', separate), ('shared', shared)):
    g = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))
    grads[name] = g(dec, z)
    cost = g.lower(dec, z).compile().cost_analysis()
    flops[name] = (cost[0] if isinstance(cost, list) else cost)['flops']
  # Tolerance relative to each leaf's scale: with batch norm some gradients
  # nearly cancel (scale invariance), leaving float32 rounding of the
  # leaf's large entries in a few small ones (and a bias before batch norm
  # has gradient 0 up to rounding).
  wants = jax.tree_util.tree_leaves(grads['separate'])
  scale = max(float(np.abs(w).max()) for w in wants)
  for got, want in zip(jax.tree_util.tree_leaves(grads['shared']), wants):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)
  # z's gradient is the first output's only: c1 through the decoder.
  only_first = jax.grad(lambda z_: jnp.sum(c1 * model.decode(dec, z_)))(z)
  np.testing.assert_allclose(grads['shared'][1][1], only_first, rtol=1e-4, atol=1e-6)
  assert flops['shared'] < 0.9 * flops['separate'], flops


@pytest.mark.parametrize('kernel_size', [2, 3, 4, 5])
@pytest.mark.parametrize('features', [1, 3, 16, 20])
def test_upsample_conv_modes_equal_lax_conv_transpose_with_gradients(kernel_size, features):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 5, 6))
  w = jax.random.normal(jax.random.PRNGKey(1), (kernel_size, kernel_size, 6, features))
  reference = lambda x_, w_: jax.lax.conv_transpose(
    x_, w_, (2, 2), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )
  ct = jax.random.normal(jax.random.PRNGKey(2), (2, 10, 10, features))
  expected, vjp = jax.vjp(reference, x, w)
  expected_grads = vjp(ct)
  for mode in ('auto', 'adjoint', 'fused', 'per_phase'):
    got, vjp = jax.vjp(lambda x_, w_: conv_forms.upsample_conv(x_, w_, mode=mode), x, w)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=mode)
    for a, b in zip(vjp(ct), expected_grads):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=mode)
  with pytest.raises(ValueError, match='mode'):
    conv_forms.upsample_conv(x, w, mode='nope')


def test_train_step_applies_the_optax_update_computed_by_hand():
  config, loss_fn, model, _ = make('lpga', True)
  optimizer = ts.make_optimizer(config)
  state = ts.init_train_state(model, optimizer, jax.random.PRNGKey(3))
  x = images()
  new_state, metrics = jax.jit(ts.make_train_step(loss_fn, optimizer))(state, x)
  # By hand: the step's key, the gradient, optax's update.
  rng = jax.random.fold_in(state.rng, state.step)
  grads = jax.jit(jax.grad(lambda p: loss_fn(p, x, rng, state.step)[0]))(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  # Float32 rounding: the step is one program, the reference three.
  chex.assert_trees_all_close(new_state.params, params, rtol=1e-4, atol=2e-5)
  chex.assert_trees_all_close(new_state.opt_state, opt_state, rtol=1e-4, atol=2e-5)
  np.testing.assert_allclose(metrics['grad_norm'], optax.global_norm(grads), rtol=1e-4)
  assert float(metrics['finite']) == 1.0 and int(new_state.step) == 1


@jax.custom_vjp
def _inf_gradient_entry(w):
  return w


_inf_gradient_entry.defvjp(lambda w: (w, None), lambda _, g: (g.at[12345].set(jnp.inf),))


def test_train_step_skips_a_step_with_one_inf_gradient_entry():
  """One Inf among 50000 gradient entries, finite loss: the (norm-based) check fails."""

  def loss_fn(params, images, rng, step):
    del images, rng, step
    loss = 1e-3 * jnp.sum(_inf_gradient_entry(params['w']) ** 2)
    return loss, {'loss': loss}

  optimizer = optax.sgd(0.1, momentum=0.9)
  params = {'w': jnp.ones(50000)}
  state = ts.TrainState(
    jnp.zeros((), jnp.int32), params, optimizer.init(params), jax.random.PRNGKey(0)
  )
  step_fn = jax.jit(ts.make_train_step(loss_fn, optimizer))
  new_state, metrics = step_fn(state, jnp.zeros(1))
  assert np.isfinite(float(metrics['loss'])) and float(metrics['finite']) == 0.0
  chex.assert_trees_all_equal(new_state.params, state.params)
  chex.assert_trees_all_equal(new_state.opt_state, state.opt_state)
  assert int(new_state.step) == 1


def flat(tree):
  return jnp.concatenate([a.ravel() for a in jax.tree_util.tree_leaves(tree)])


# Gradient cosine to float32 each term must reach in bfloat16. The terms that
# difference h at nearby points (Eq. 6 with eps = 0.01 sqrt(H); vrec with
# sigma ~ 0.1) lose digits to bfloat16's 8-bit mantissa: measured cosines
# 0.93-0.98 here (H = 4), 0.98-0.996 at the reference's sizes
# (docs/benchmarks.md). The other terms match float32 to ~1%.
DIFFERENCE_TERMS = {'nll_dec': 0.9, 'vrec': 0.9}


@pytest.mark.parametrize('method_name', ['lpga', 'vpga', 'vae'])
def test_bfloat16_compute_is_close_to_float32_with_float32_parameters(method_name):
  # conv_mnist: bfloat16's error depends on the widths (on conv_tiny, VPGA's
  # nll_dec gradient has cosine 0.23 to float32's).
  config32, f32_fn, model32, method = make(method_name, True, arch='conv_mnist')
  config16, bf16_fn, model16, _ = make(
    method_name, True, arch='conv_mnist', compute_dtype='bfloat16'
  )
  assert model16.dtype == jnp.bfloat16 and model32.dtype is None
  params = model32.init(jax.random.PRNGKey(0))
  x = jnp.asarray(data.scale_images(helpers.synthetic_digits(32)[..., None]))
  rng = jax.random.PRNGKey(4)
  for term in methods.active_terms(method, config32):

    def value(p, model, term=term):
      return term.fn(
        model, methods.route(p, term.updates), x, methods.term_rng(rng, term.name), config32
      )

    v32, g32 = jax.jit(jax.value_and_grad(functools.partial(value, model=model32)))(params)
    v16, g16 = jax.jit(jax.value_and_grad(functools.partial(value, model=model16)))(params)
    assert v16.dtype == jnp.float32
    np.testing.assert_allclose(v16, v32, rtol=2e-2, atol=1e-4, err_msg=term.name)
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(g16))
    a, b = flat(g16), flat(g32)
    assert bool(jnp.all(jnp.isfinite(a))), term.name
    cosine = float(jnp.dot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b)))
    assert cosine > DIFFERENCE_TERMS.get(term.name, 0.99), (term.name, cosine)
    if term.name not in DIFFERENCE_TERMS:
      # Per parameter, too: a bias gradient summed in bfloat16 stalls (it was
      # 30x too small for the image layer before layers.add_bias).
      for (path, l16), l32 in zip(
        jax.tree_util.tree_leaves_with_path(g16), jax.tree_util.tree_leaves(g32)
      ):
        n16, n32 = float(jnp.linalg.norm(l16)), float(jnp.linalg.norm(l32))
        assert abs(n16 - n32) <= 0.05 * n32 + 1e-7, (
          term.name,
          jax.tree_util.keystr(path),
          n16,
          n32,
        )
  # A whole train step in bf16 applies a finite update to float32 parameters.
  optimizer = ts.make_optimizer(config16)
  state = ts.init_train_state(model16, optimizer, jax.random.PRNGKey(5))
  new_state, metrics = jax.jit(ts.make_train_step(bf16_fn, optimizer))(state, x)
  assert float(metrics['finite']) == 1.0
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(new_state.params))
  assert not np.array_equal(flat(new_state.params), flat(state.params))


def test_the_train_loop_compiles_its_step_once(tmp_path, monkeypatch):
  """chex.assert_max_traces on the step the loop jits: a retrace (e.g. the
  state coming back with another sharding or dtype) is a recompile."""
  from pga_jax import train  # pylint: disable=g-import-not-at-top

  data_dir = str(tmp_path / 'idx')
  helpers.write_idx_images(data_dir, helpers.synthetic_digits(32))
  make_step = ts.make_train_step
  monkeypatch.setattr(
    ts,
    'make_train_step',
    lambda loss_fn, optimizer: chex.assert_max_traces(make_step(loss_fn, optimizer), n=1),
  )
  config = helpers.tiny_config(
    data_dir, num_steps=5, log_every=2, sample_every=100, checkpoint_every=100
  )
  result = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert result.step == 5
  chex.clear_trace_counter()


@pytest.mark.parametrize('kernel_size', [2, 3, 4, 5])
@pytest.mark.parametrize('size,features_in,features_out', [(8, 3, 16), (4, 20, 6), (6, 32, 64)])
def test_downsample_conv_equals_lax_conv_with_gradients(
  kernel_size, size, features_in, features_out
):
  """The encoder's stride-2 conv with its custom backward pass against lax's autodiff."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, size, size, features_in))
  w = jax.random.normal(
    jax.random.PRNGKey(1), (kernel_size, kernel_size, features_in, features_out)
  )
  reference = lambda x_, w_: jax.lax.conv_general_dilated(
    x_, w_, (2, 2), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )
  expected, vjp_ref = jax.vjp(reference, x, w)
  got, vjp_got = jax.vjp(conv_forms.downsample_conv, x, w)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  ct = jax.random.normal(jax.random.PRNGKey(2), expected.shape)
  for a, b in zip(vjp_got(ct), vjp_ref(ct)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('shape', [(7, 128, 64), (4, 64, 32), (16, 8, 16), (5, 6, 3)])
def test_transposed_conv_dispatch_equals_lax_conv_transpose(shape):
  """Every form `transposed_conv` may pick computes lax.conv_transpose."""
  size, cin, cout = shape
  x = jax.random.normal(jax.random.PRNGKey(0), (2, size, size, cin))
  w = jax.random.normal(jax.random.PRNGKey(1), (5, 5, cin, cout))
  expected = jax.lax.conv_transpose(
    x, w, (2, 2), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )
  np.testing.assert_allclose(forms.transposed_conv(x, w, 2), expected, rtol=1e-4, atol=1e-4)


def test_model_gradients_do_not_depend_on_the_custom_backward_passes():
  """conv_64 encoder and decoder with the custom VJPs against plain lax autodiff."""
  fast = AutoEncoder('conv_64', 8, 3, use_bn=True)
  plain = AutoEncoder('conv_64', 8, 3, use_bn=True, conv_impl='xla')
  params = fast.init(jax.random.PRNGKey(0))
  x = jax.random.uniform(jax.random.PRNGKey(1), (3, 64, 64, 3), minval=-1, maxval=1)

  def loss(model, p):
    return jnp.mean(jnp.square(model.encode_decode(p, model.encode(p['encoder'], x).mean)))

  got = jax.jit(jax.grad(lambda p: loss(fast, p)))(params)
  want = jax.jit(jax.grad(lambda p: loss(plain, p)))(params)
  wants = jax.tree_util.tree_leaves(want)
  scale = max(float(np.abs(w).max()) for w in wants)
  for a, b in zip(jax.tree_util.tree_leaves(got), wants):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5 * scale)
