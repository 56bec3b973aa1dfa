"""Architectures: shapes, dtypes, hand-counted parameters, initialisation, batch norm."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pga_jax.models import AutoEncoder, param_count

ARCHS = [('conv_mnist', 1), ('conv_tiny', 1), ('conv_32', 3), ('conv_64', 3), ('resnet_32', 3)]


def conv(k, cin, cout):
  return k * k * cin * cout + cout


def dense(nin, nout):
  return nin * nout + nout


def expected_counts(arch, H, C, bn, logvar):
  """Parameter counts written out by hand from the reference's layer list."""
  b = lambda n: 2 * n if bn else 0  # batch norm scale + offset
  heads = lambda nin: dense(nin, H) * (2 if logvar else 1)
  if arch == 'conv_mnist':
    enc = (
      conv(5, C, 64) + conv(5, 64, 128) + b(128) + dense(7 * 7 * 128, 1024) + b(1024) + heads(1024)
    )
    dec = (
      dense(H, 1024) + dense(1024, 7 * 7 * 128) + b(7 * 7 * 128) + conv(5, 128, 64) + conv(5, 64, C)
    )
  elif arch == 'conv_tiny':  # conv_mnist's layers at dim 8 and 64 hidden units
    enc = conv(5, C, 8) + conv(5, 8, 16) + b(16) + dense(7 * 7 * 16, 64) + b(64) + heads(64)
    dec = dense(H, 64) + dense(64, 7 * 7 * 16) + b(7 * 7 * 16) + conv(5, 16, 8) + conv(5, 8, C)
  elif arch == 'conv_32':
    enc = (
      conv(5, C, 64) + conv(5, 64, 128) + b(128) + conv(5, 128, 256) + b(256) + heads(4 * 4 * 256)
    )
    dec = dense(H, 4 * 4 * 256) + conv(5, 256, 128) + b(128) + conv(5, 128, 64) + conv(5, 64, C)
  elif arch == 'conv_64':
    enc = (
      conv(5, C, 64)
      + conv(5, 64, 128)
      + conv(5, 128, 256)
      + b(256)
      + conv(5, 256, 512)
      + b(512)
      + heads(4 * 4 * 512)
    )
    dec = (
      dense(H, 4 * 4 * 512)
      + conv(5, 512, 256)
      + b(256)
      + conv(5, 256, 128)
      + b(128)
      + conv(5, 128, 64)
      + conv(5, 64, C)
    )
  else:  # resnet_32, width 512
    w = 512
    block = lambda cin: b(cin) + conv(3, cin, w) + b(w) + conv(3, w, w)
    enc = (
      conv(1, C, w)
      + conv(3, C, w)
      + b(w)
      + conv(3, w, w)  # down0, no pre-activation
      + conv(1, w, w)
      + block(w)  # down1
      + 2 * block(w)
      + heads(8 * 8 * w)
    )  # plain0, plain1
    dec = (
      dense(H, 4 * 4 * 4 * w)
      + conv(1, 4 * w, w)
      + block(4 * w)
      + 2 * (conv(1, w, w) + block(w))
      + b(w)
      + conv(3, w, C)
    )
  return enc, dec


@pytest.mark.parametrize('arch,channels', ARCHS)
@pytest.mark.parametrize('bn', [False, True])
@pytest.mark.parametrize('logvar', [False, True])
def test_parameter_counts_match_hand_computed(arch, channels, bn, logvar):
  model = AutoEncoder(arch, 16, channels, use_bn=bn, with_logvar=logvar)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  enc, dec = expected_counts(arch, 16, channels, bn, logvar)
  assert param_count(shapes['encoder']) == enc
  assert param_count(shapes['decoder']) == dec


@pytest.mark.parametrize('arch,channels', ARCHS)
def test_shapes_and_dtypes_at_native_resolution(arch, channels):
  model = AutoEncoder(arch, 8, channels, use_bn=True, with_logvar=True)
  params = model.init(jax.random.PRNGKey(0))
  size = model.image_size
  for batch in (1, 64):
    x = jnp.zeros((batch, size, size, channels), jnp.float32)
    z = jnp.zeros((batch, 8), jnp.float32)
    if batch == 64 and arch != 'conv_mnist':
      # Same shapes and dtypes as the compiled computation, without the CPU
      # minutes a 64-image forward pass of the large networks costs.
      enc = jax.eval_shape(model.encode, params['encoder'], x)
      dec = jax.eval_shape(model.decode, params['decoder'], z)
    else:
      enc = model.encode(params['encoder'], x)
      dec = model.decode(params['decoder'], z)
    assert enc.mean.shape == (batch, 8) and enc.mean.dtype == jnp.float32
    assert enc.logvar.shape == (batch, 8) and enc.logvar.dtype == jnp.float32
    assert dec.shape == (batch, size, size, channels) and dec.dtype == jnp.float32


def test_decoder_output_in_tanh_range_and_encoder_has_no_logvar_by_default():
  model = AutoEncoder('conv_mnist', 4, 1)
  params = model.init(jax.random.PRNGKey(0))
  out = model.decode(params['decoder'], 100 * jax.random.normal(jax.random.PRNGKey(1), (8, 4)))
  assert float(jnp.max(jnp.abs(out))) <= 1.0
  assert model.encode(params['encoder'], out).logvar is None


def test_initialisation_glorot_uniform_zero_bias_logvar_bias():
  model = AutoEncoder('conv_32', 16, 3, with_logvar=True)
  params = model.init(jax.random.PRNGKey(0))
  kernel = np.asarray(params['encoder']['conv1']['kernel'])  # 5x5x64x128
  limit = math.sqrt(6 / (25 * 64 + 25 * 128))
  assert np.abs(kernel).max() <= limit
  assert abs(kernel.std() - limit / math.sqrt(3)) < 0.02 * limit
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = jax.tree_util.keystr(path)
    if name.endswith("['bias']") and 'logvar' not in name:
      assert not np.any(np.asarray(leaf)), name
  np.testing.assert_allclose(
    params['encoder']['heads']['logvar']['bias'], 2 * np.log(0.1), rtol=1e-6
  )


def test_sampling_with_batch_norm_is_independent_of_sample_batch_size():
  model = AutoEncoder('conv_mnist', 6, 1, use_bn=True)
  params = model.init(jax.random.PRNGKey(0))
  reference = jax.random.normal(jax.random.PRNGKey(1), (64, 6))
  z = jax.random.normal(jax.random.PRNGKey(2), (10, 6))
  all_at_once = model.decode_with_reference(params['decoder'], z, reference)
  one_by_one = jnp.concatenate(
    [model.decode_with_reference(params['decoder'], z[i : i + 1], reference) for i in range(10)]
  )
  np.testing.assert_allclose(all_at_once, one_by_one, rtol=1e-5, atol=1e-5)
  # Plain decoding, by contrast, depends on the batch through its statistics.
  plain = model.decode(params['decoder'], z)
  assert not np.allclose(plain[:3], model.decode(params['decoder'], z[:3]), atol=1e-4)
