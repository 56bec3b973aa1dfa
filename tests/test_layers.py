"""The fast transposed convolution and batch norm against independent computations."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pga_jax import conv_forms
from pga_jax.models import layers


@pytest.mark.parametrize('kernel_size', [3, 4, 5])
@pytest.mark.parametrize('size', [4, 7])
def test_upsample_conv_equals_lax_conv_transpose(kernel_size, size):
  x = jax.random.normal(jax.random.PRNGKey(0), (3, size, size, 6))
  w = jax.random.normal(jax.random.PRNGKey(1), (kernel_size, kernel_size, 6, 5))
  expected = jax.lax.conv_transpose(
    x, w, (2, 2), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )
  got = conv_forms.upsample_conv(x, w)
  assert got.shape == (3, 2 * size, 2 * size, 5)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_upconv_matches_flax_conv_transpose_forward_and_gradients():
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 7, 7, 8))
  ours = layers.UpConv(4)
  params = ours.init(jax.random.PRNGKey(3), x)
  params = jax.tree_util.tree_map(
    lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(4), p.shape), params
  )
  theirs = nn.ConvTranspose(4, (5, 5), strides=(2, 2), padding='SAME')
  np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), rtol=1e-5, atol=1e-5)

  def loss(module):
    return lambda p, inp: jnp.sum(jnp.sin(module.apply(p, inp)))

  g_ours = jax.grad(loss(ours), argnums=(0, 1))(params, x)
  g_theirs = jax.grad(loss(theirs), argnums=(0, 1))(params, x)
  for a, b in zip(jax.tree_util.tree_leaves(g_ours), jax.tree_util.tree_leaves(g_theirs)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_batch_norm_uses_batch_statistics_like_numpy():
  x = np.random.RandomState(0).randn(6, 3, 3, 4).astype(np.float32) * 3 + 1
  bn = layers.BatchNorm()
  params = {
    'params': {
      'scale': np.array([1.0, 2.0, 0.5, 1.0], np.float32),
      'bias': np.array([0.0, 1.0, -1.0, 0.2], np.float32),
    }
  }
  mean = x.mean(axis=(0, 1, 2))
  var = x.var(axis=(0, 1, 2))
  expected = (x - mean) / np.sqrt(var + 1e-3) * params['params']['scale'] + params['params']['bias']
  np.testing.assert_allclose(bn.apply(params, x), expected, rtol=1e-4, atol=1e-4)


def test_batch_norm_stat_rows_uses_only_leading_rows():
  x = np.random.RandomState(1).randn(10, 4).astype(np.float32)
  bn = layers.BatchNorm()
  params = bn.init(jax.random.PRNGKey(0), x)
  ref = x[:6]
  expected = (x - ref.mean(0)) / np.sqrt(ref.var(0) + 1e-3)
  np.testing.assert_allclose(bn.apply(params, x, 6), expected, rtol=1e-4, atol=1e-5)
