"""Building blocks shared by the encoder/decoder architectures.

Everything here is a `flax.linen` module over NHWC arrays, initialised as in
the reference implementation (Glorot/Xavier-uniform weights, zero biases).
The strided and transposed convolutions run in the form `pga_jax.conv_forms`
gives for their `conv_impl` (every form is exact).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from pga_jax import conv_forms

glorot_uniform = nn.initializers.xavier_uniform()
zeros = nn.initializers.zeros

# TF1's `tf.layers.batch_normalization` / `tf.contrib.layers.batch_norm`
# default epsilon, which the reference used.
BATCH_NORM_EPSILON = 1e-3


def at_least_float32(dtype) -> jnp.dtype:
  """float32 for low-precision dtypes; float64 stays float64 (gradient checks)."""
  return jnp.promote_types(dtype, jnp.float32)


def leaky_relu(x: jax.Array) -> jax.Array:
  """The reference's `lrelu`: leaky ReLU with slope 0.2."""
  return nn.leaky_relu(x, negative_slope=0.2)


class BatchNorm(nn.Module):
  """Batch normalisation that always uses batch statistics.

  Why not `flax.linen.BatchNorm`: PGA calls each network several times per
  step on batches from different distributions (data latents, prior samples,
  perturbed latents; see the paper's Sec. 3). The reference normalises every
  call with the statistics of *that call's own batch* and never uses running
  averages, not even when sampling. We do the same, so there is no
  `batch_stats` collection and parameters stay one plain pytree.

  `stat_rows` makes outputs independent of the batch they are computed in:
  when given, mean and variance come from the first `stat_rows` rows only and
  are applied to every row. Sampling uses it with a fixed reference batch of
  prior draws placed in front of the samples, so a sample does not depend on
  how many other samples are drawn with it (see `AutoEncoder.decode`).

  Under `jax.jit` with a batch sharded over devices, the mean over axis 0 is a
  mean over the *global* batch (XLA inserts the cross-device reduction), so
  results do not depend on the device count.
  """

  epsilon: float = BATCH_NORM_EPSILON

  @nn.compact
  def __call__(self, x: jax.Array, stat_rows: Optional[int] = None) -> jax.Array:
    features = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (features,), jnp.float32)
    bias = self.param('bias', zeros, (features,), jnp.float32)
    reduce_axes = tuple(range(x.ndim - 1))
    stats_source = x if stat_rows is None else x[:stat_rows]
    # Statistics in at least float32, even under a bf16 compute dtype.
    stats_dtype = at_least_float32(x.dtype)
    stats_source = stats_source.astype(stats_dtype)
    mean = jnp.mean(stats_source, axis=reduce_axes)
    var = jnp.mean(jnp.square(stats_source - mean), axis=reduce_axes)
    inv = jax.lax.rsqrt(var + self.epsilon) * scale
    out = (x.astype(stats_dtype) - mean) * inv + bias
    return out.astype(x.dtype)


def conv_parameters(module: nn.Module, in_features: int):
  """A k x k convolution's float32 `kernel` (k, k, in, out; Glorot-uniform, the
  reference's initialiser) and zero `bias` (out,), declared in `module`
  (which has `kernel_size` and `features`)."""
  k = module.kernel_size
  kernel = module.param('kernel', glorot_uniform, (k, k, in_features, module.features), jnp.float32)
  bias = module.param('bias', zeros, (module.features,), jnp.float32)
  return kernel, bias


def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
  """y + bias, in y's dtype; under a low-precision dtype the sum is formed in
  float32, so the bias gradient (a sum over batch and pixels) is accumulated
  in float32. XLA:CPU sums a bfloat16 cotangent in bfloat16, which stalls:
  the conv_mnist image layer's bias gradient came out 30x too small."""
  if y.dtype == at_least_float32(y.dtype):
    return y + bias.astype(y.dtype)
  return (y.astype(jnp.float32) + bias.astype(jnp.float32)).astype(y.dtype)


class _ConvLayer(nn.Module):
  """What UpConv and Conv share: `features` k x k kernels and a bias
  (`conv_parameters`), a convolution in the form its `conv_impl` gives for the
  shapes (`conv_forms.convolve`), then `add_bias`. A subclass declares its
  stride, `dtype` and `conv_impl`, and its compact `__call__` returns `_output`."""

  features: int
  kernel_size: int = 5

  def _output(self, x: jax.Array, op: str, stride: int, dtype) -> jax.Array:
    """The layer's output for `op` ('upsample' or 'downsample'), computed in `dtype`."""
    kernel, bias = conv_parameters(self, x.shape[-1])
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    return add_bias(conv_forms.convolve(op, x, kernel, stride, self.conv_impl), bias)


class UpConv(_ConvLayer):
  """Stride-2 'SAME' transposed convolution with a fast exact implementation.

  Parameters have the names and shapes of `flax.linen.ConvTranspose`
  (`kernel`: (kh, kw, in, out), `bias`: (out,)), so the same weights can be
  fed to either; `tests/test_layers.py` checks they agree.
  `conv_impl` (see `conv_forms.forms.layer_forms`): 'auto' (default) runs
  the form measured fastest for the shape on this device; 'xla' computes it
  with `lax.conv_transpose` and JAX's own autodiff (forward-mode capable);
  'phase' and 'adjoint' force those forms.
  """

  stride: int = 2
  dtype: Optional[jnp.dtype] = None
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return self._output(x, 'upsample', self.stride, self.dtype or x.dtype)


class Conv(_ConvLayer):
  """`flax.linen.Conv` with 'SAME' padding (same parameters and computation),
  whose bias is added by `add_bias`. `conv_impl` (see
  `conv_forms.forms.layer_forms`): how a strided convolution's backward pass
  is computed ('auto': measured; 'xla': JAX's own autodiff, jvp works); a
  stride-1 convolution is always lax's."""

  strides: int = 2
  dtype: Optional[jnp.dtype] = None
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = self.dtype or at_least_float32(x.dtype)
    return self._output(x, 'downsample', self.strides, dtype)


class Dense(nn.Module):
  """`flax.linen.Dense` (same parameters and computation), whose bias is
  added by `add_bias`."""

  features: int
  dtype: Optional[jnp.dtype] = None
  bias_init: Callable = zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', glorot_uniform, (x.shape[-1], self.features), jnp.float32)
    bias = self.param('bias', self.bias_init, (self.features,), jnp.float32)
    dtype = self.dtype or jnp.promote_types(x.dtype, jnp.float32)
    y = jax.lax.dot_general(
      x.astype(dtype), kernel.astype(dtype), (((x.ndim - 1,), (0,)), ((), ()))
    )
    return add_bias(y, bias)


def conv(
  features: int,
  kernel_size: int = 5,
  strides: int = 2,
  dtype: Optional[jnp.dtype] = None,
  name: Optional[str] = None,
  conv_impl: str = 'auto',
) -> Conv:
  """The reference's conv layer: 'SAME' padding, Glorot-uniform, zero bias."""
  return Conv(features, kernel_size, strides, dtype=dtype, conv_impl=conv_impl, name=name)


def dense(
  features: int, dtype: Optional[jnp.dtype] = None, bias_init=zeros, name: Optional[str] = None
) -> Dense:
  """The reference's dense layer: Glorot-uniform weights, zero bias."""
  return Dense(features, dtype=dtype, bias_init=bias_init, name=name)


def maybe_batch_norm(x: jax.Array, use_bn: bool, stat_rows: Optional[int], name: str) -> jax.Array:
  """Applies `BatchNorm` where the reference marks `bn`, if the flag is on.

  Must be called from inside a compact module's `__call__`.
  """
  if not use_bn:
    return x
  return BatchNorm(name=name)(x, stat_rows)


def flatten(x: jax.Array) -> jax.Array:
  return x.reshape(x.shape[0], -1)


def spatial_shape(x: jax.Array) -> Sequence[int]:
  return x.shape[1:3]
