"""Building blocks shared by the encoder/decoder architectures.

Everything here is a `flax.linen` module over NHWC arrays, initialised as in
the reference implementation (Glorot/Xavier-uniform weights, zero biases).
"""
from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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


def _phase_taps(kernel_size: int, stride: int, pad_before: int):
  """Which kernel taps feed each output phase of a transposed convolution.

  A stride-`s` transposed convolution (as `jax.lax.conv_transpose` computes
  it, kernel not flipped) is `y[o] = sum_t k[t] * x[(o + t - pad_before) / s]`
  over the taps `t` that make the index an integer. Writing `o = s*m + p`
  splits it into `s` ordinary (stride-1) convolutions, one per phase `p`:
  `y[s*m + p] = sum_d K_p[d] * x[m + d]`. Returns, per phase, a list of
  (offset d, tap t), and the overall offset range.
  """
  taps = []
  for phase in range(stride):
    phase_taps = []
    for t in range(kernel_size):
      if (phase + t - pad_before) % stride == 0:
        phase_taps.append(((phase + t - pad_before) // stride, t))
    taps.append(phase_taps)
  offsets = [d for phase_taps in taps for d, _ in phase_taps]
  return taps, min(offsets), max(offsets)


def _same_transpose_padding(kernel_size: int, stride: int) -> int:
  """`pad_before` of `jax.lax.conv_transpose(..., padding='SAME')`."""
  pad_len = kernel_size + stride - 2
  if stride > kernel_size - 1:
    return kernel_size - 1
  return int(np.ceil(pad_len / 2))


def phase_kernel(kernel: jax.Array, stride: int) -> tuple[jax.Array, int, int]:
  """Rearranges a (kh, kw, in, out) transposed-conv kernel for `upsample_conv`.

  Returns a stride-1 kernel of shape (n, n, in, stride*stride*out) whose output
  channels are ordered (row phase, column phase, out), and the (low, high)
  spatial offsets the convolution must pad with.
  """
  kh, kw, cin, cout = kernel.shape
  if kh != kw:
    raise ValueError(f'phase_kernel needs a square kernel, got {kernel.shape}')
  taps, low, high = _phase_taps(kh, stride, _same_transpose_padding(kh, stride))
  n = high - low + 1
  # Index kh points at an appended zero tap: positions a phase does not use.
  padded = jnp.concatenate([kernel, jnp.zeros((1, kw, cin, cout), kernel.dtype)], 0)
  padded = jnp.concatenate([padded, jnp.zeros((kh + 1, 1, cin, cout), kernel.dtype)], 1)
  index = np.full((stride, n), kh, dtype=np.int32)
  for phase, phase_taps in enumerate(taps):
    for d, t in phase_taps:
      index[phase, d - low] = t
  rows = index[:, None, :, None]   # (phase_r, 1, n, 1)
  cols = index[None, :, None, :]   # (1, phase_c, 1, n)
  gathered = padded[rows, cols]    # (pr, pc, n, n, in, out)
  gathered = jnp.transpose(gathered, (2, 3, 4, 0, 1, 5))
  return gathered.reshape(n, n, cin, stride * stride * cout), -low, high


def upsample_conv(x: jax.Array, kernel: jax.Array, stride: int = 2) -> jax.Array:
  """Exactly `jax.lax.conv_transpose(x, kernel, (s, s), 'SAME')`, computed fast.

  Phase (sub-pixel) decomposition: one stride-1 convolution produces all
  `s*s` output phases as channels, and depth-to-space interleaves them. On
  XLA:CPU the backward pass of a stride-2 transposed convolution (an
  lhs-dilated convolution) is several times slower than this form, whose
  gradients are ordinary convolutions.
  """
  n, h, w, _ = x.shape
  cout = kernel.shape[-1]
  fused, pad_low, pad_high = phase_kernel(kernel.astype(x.dtype), stride)
  y = jax.lax.conv_general_dilated(
      x, fused, window_strides=(1, 1),
      padding=((pad_low, pad_high), (pad_low, pad_high)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  y = y.reshape(n, h, w, stride, stride, cout)
  y = jnp.transpose(y, (0, 1, 3, 2, 4, 5))
  return y.reshape(n, h * stride, w * stride, cout)


class UpConv(nn.Module):
  """Stride-2 'SAME' transposed convolution with a fast exact implementation.

  Parameters have the names and shapes of `flax.linen.ConvTranspose`
  (`kernel`: (kh, kw, in, out), `bias`: (out,)), so the same weights can be
  fed to either; `tests/test_layers.py` checks they agree.
  """

  features: int
  kernel_size: int = 5
  stride: int = 2
  use_phase_decomposition: bool = True
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param('kernel', glorot_uniform, (k, k, x.shape[-1], self.features),
                        jnp.float32)
    bias = self.param('bias', zeros, (self.features,), jnp.float32)
    dtype = self.dtype or x.dtype
    x = x.astype(dtype)
    if self.use_phase_decomposition:
      y = upsample_conv(x, kernel.astype(dtype), self.stride)
    else:
      y = jax.lax.conv_transpose(x, kernel.astype(dtype), (self.stride, self.stride),
                                 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return y + bias.astype(dtype)


def conv(features: int, kernel_size: int = 5, strides: int = 2,
         dtype: Optional[jnp.dtype] = None, name: Optional[str] = None) -> nn.Conv:
  """The reference's conv layer: 'SAME' padding, Glorot-uniform, zero bias."""
  return nn.Conv(features, (kernel_size, kernel_size), strides=(strides, strides),
                 padding='SAME', kernel_init=glorot_uniform, bias_init=zeros,
                 dtype=dtype, param_dtype=jnp.float32, name=name)


def dense(features: int, dtype: Optional[jnp.dtype] = None,
          bias_init=zeros, name: Optional[str] = None) -> nn.Dense:
  """The reference's dense layer: Glorot-uniform weights, zero bias."""
  return nn.Dense(features, kernel_init=glorot_uniform, bias_init=bias_init,
                  dtype=dtype, param_dtype=jnp.float32, name=name)


def maybe_batch_norm(x: jax.Array, use_bn: bool, stat_rows: Optional[int],
                     name: str) -> jax.Array:
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
