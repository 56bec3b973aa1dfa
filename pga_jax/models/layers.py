"""Building blocks shared by the encoder/decoder architectures.

Everything here is a `flax.linen` module over NHWC arrays, initialised as in
the reference implementation (Glorot/Xavier-uniform weights, zero biases).
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

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


def _upsample_fused(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
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


def _upsample_per_phase(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """One stride-1 convolution per (row, column) phase with only that phase's taps."""
  n, h, w, _ = x.shape
  kh, kw, _, cout = kernel.shape
  if kh != kw:
    raise ValueError(f'upsample_conv needs a square kernel, got {kernel.shape}')
  taps, _, _ = _phase_taps(kh, stride, _same_transpose_padding(kh, stride))
  kernel = kernel.astype(x.dtype)
  rows = []
  for row_taps in taps:
    cols = []
    for col_taps in taps:
      if not row_taps or not col_taps:  # kernel smaller than the stride
        cols.append(jnp.zeros((n, h, w, cout), x.dtype))
        continue
      # Offsets d of a phase are consecutive: y[m] = sum_j K[t_j] x[m + d_j].
      row_d, row_t = zip(*row_taps)
      col_d, col_t = zip(*col_taps)
      sub = kernel[np.asarray(row_t)][:, np.asarray(col_t)]
      cols.append(jax.lax.conv_general_dilated(
          x, sub, window_strides=(1, 1),
          padding=((-min(row_d), max(row_d)), (-min(col_d), max(col_d))),
          dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
    rows.append(jnp.stack(cols, axis=3))       # (n, h, w, phase_c, out)
  y = jnp.stack(rows, axis=2)                  # (n, h, phase_r, w, phase_c, out)
  return y.reshape(n, h * stride, w * stride, cout)


def _adjoint_padding(kernel_size: int, stride: int) -> tuple[int, int]:
  """Padding of the strided convolution whose adjoint (transpose) is
  `conv_transpose(..., 'SAME')` with a flipped, in/out-swapped kernel.

  Low side: kernel_size - 1 - pad_before; high side: what makes a
  stride-s input of size s*n come out at size n.
  """
  low = kernel_size - 1 - _same_transpose_padding(kernel_size, stride)
  return low, kernel_size - stride - low


def _adjoint_kernel(kernel: jax.Array) -> jax.Array:
  """Spatially flipped, in/out swapped: the strided convolution's kernel
  (an involution, so it also maps that kernel's gradient back)."""
  return jnp.flip(kernel, (0, 1)).swapaxes(2, 3)


def _strided_conv(images: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  low, high = _adjoint_padding(kernel.shape[0], stride)
  return jax.lax.conv_general_dilated(
      images, kernel, window_strides=(stride, stride), padding=((low, high), (low, high)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def transposed_conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """`lax.conv_transpose(x, kernel, (s, s), 'SAME')` (no autodiff rule of its
  own; used inside the custom VJPs below), in the form XLA:CPU runs fastest
  for the shape.

  Measured at batch 64 (docs/benchmarks.md): `lax.conv_transpose` is best
  for few output channels and for conv_mnist's 7x7x128 input, but
  pathologically slow for small inputs with many channels (4x4x512 ->
  8x8x256: 2.4 s against 40 ms); elsewhere the per-phase decomposition wins.
  """
  if kernel.shape[-1] < 16 or (max(x.shape[1:3]) <= 7 and x.shape[-1] <= 128):
    return jax.lax.conv_transpose(x, kernel, (stride, stride), 'SAME',
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return _upsample_per_phase(x, kernel, stride)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _upsample_adjoint(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  return transposed_conv(x, kernel, stride)


def _upsample_adjoint_forward(x, kernel, stride):
  return _upsample_adjoint(x, kernel, stride), (x, kernel)


def _upsample_adjoint_backward(stride, residuals, cotangent):
  """y = C^T x with C the strided convolution by `_adjoint_kernel(kernel)`,
  so <g, y> = <C g, x>: dx = C g (a strided convolution) and dkernel is the
  weight gradient of C g against x, both the fast kinds of convolution on
  XLA:CPU (the autodiff rule of the lhs-dilated forward is not)."""
  x, kernel = residuals
  flipped = _adjoint_kernel(kernel)
  d_x = _strided_conv(cotangent, flipped, stride)
  _, kernel_vjp = jax.vjp(lambda k: _strided_conv(cotangent, k, stride), flipped)
  (d_flipped,) = kernel_vjp(x)
  return d_x, _adjoint_kernel(d_flipped)


_upsample_adjoint.defvjp(_upsample_adjoint_forward, _upsample_adjoint_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _downsample(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  return _strided_conv(x, kernel, stride)


def _downsample_forward(x, kernel, stride):
  return _downsample(x, kernel, stride), (x, kernel)


def _downsample_backward(stride, residuals, cotangent):
  """y = C x, so dx = C^T g = `transposed_conv(g, _adjoint_kernel(kernel))`
  in its fastest form (JAX's own rule is the lhs-dilated convolution that
  XLA:CPU runs pathologically slowly for some shapes); dkernel is JAX's."""
  x, kernel = residuals
  d_x = transposed_conv(cotangent, _adjoint_kernel(kernel), stride)
  _, kernel_vjp = jax.vjp(lambda k: _strided_conv(x, k, stride), kernel)
  return d_x, kernel_vjp(cotangent)[0]


_downsample.defvjp(_downsample_forward, _downsample_backward)


def downsample_conv(x: jax.Array, kernel: jax.Array, stride: int = 2) -> jax.Array:
  """Exactly `lax.conv_general_dilated(x, kernel, (s, s), 'SAME')` (NHWC,
  HWIO), with a faster backward pass (`_downsample_backward`) where the
  input's height and width are multiples of the stride and the kernel is
  square and at least the stride (the reference's encoders); otherwise the
  plain convolution. Reverse-mode only in the fast case (a custom VJP).
  """
  kh, kw = kernel.shape[:2]
  if stride > 1 and kh == kw >= stride and x.shape[1] % stride == 0 and x.shape[2] % stride == 0:
    return _downsample(x, kernel, stride)
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), 'SAME',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def upsample_conv(x: jax.Array, kernel: jax.Array, stride: int = 2,
                  mode: str = 'auto') -> jax.Array:
  """Exactly `jax.lax.conv_transpose(x, kernel, (s, s), 'SAME')`, computed fast.

  Phase (sub-pixel) decomposition: output pixel `s*m + p` only sees the
  kernel taps of phase `p`, so the transposed convolution is `s*s` ordinary
  (stride-1) convolutions, interleaved (depth-to-space). On XLA:CPU the
  backward pass of a stride-2 transposed convolution (an lhs-dilated
  convolution) is several times slower than this form, whose gradients are
  ordinary convolutions.

  mode: 'adjoint' (what 'auto' picks) computes the forward pass with
  `transposed_conv` and the backward pass from the strided convolution
  whose transpose it is (`_upsample_adjoint_backward`): the fastest form
  on XLA:CPU (docs/benchmarks.md), reverse-mode only (a `jax.custom_vjp`;
  for `jax.jvp` / `jacfwd` use 'fused' or 'per_phase', or build the
  AutoEncoder with `use_phase_decomposition=False`).
  'fused' runs all phases as one convolution with `s*s*out` channels
  (a phase's missing taps are zeros: 36 taps computed for a 5x5 kernel's
  25); 'per_phase' runs one convolution per phase with its own taps only;
  'auto' picks 'adjoint', or 'fused' for a kernel smaller than the stride.
  """
  if mode == 'auto':
    mode = 'adjoint' if kernel.shape[0] >= stride else 'fused'
  if mode == 'adjoint':
    if kernel.shape[0] != kernel.shape[1] or kernel.shape[0] < stride:
      raise ValueError(f"upsample_conv mode 'adjoint' needs a square kernel at least as "
                       f"large as the stride ({stride}), got {kernel.shape}")
    return _upsample_adjoint(x, kernel, stride)
  if mode == 'fused':
    return _upsample_fused(x, kernel, stride)
  if mode == 'per_phase':
    return _upsample_per_phase(x, kernel, stride)
  raise ValueError(f"upsample_conv mode must be 'auto', 'adjoint', 'fused' or 'per_phase', "
                   f"got {mode!r}")


class UpConv(nn.Module):
  """Stride-2 'SAME' transposed convolution with a fast exact implementation.

  Parameters have the names and shapes of `flax.linen.ConvTranspose`
  (`kernel`: (kh, kw, in, out), `bias`: (out,)), so the same weights can be
  fed to either; `tests/test_layers.py` checks they agree.
  `use_phase_decomposition=False` computes it with `lax.conv_transpose` and
  JAX's own autodiff (slow backward pass on CPU, but forward-mode capable;
  `AutoEncoder(use_phase_decomposition=False)` does the same for the
  encoder's convolutions).
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
    return add_bias(y, bias)


def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
  """y + bias, in y's dtype; under a low-precision dtype the sum is formed in
  float32, so the bias gradient (a sum over batch and pixels) is accumulated
  in float32. XLA:CPU sums a bfloat16 cotangent in bfloat16, which stalls:
  the conv_mnist image layer's bias gradient came out 30x too small."""
  if y.dtype == at_least_float32(y.dtype):
    return y + bias.astype(y.dtype)
  return (y.astype(jnp.float32) + bias.astype(jnp.float32)).astype(y.dtype)


class Conv(nn.Module):
  """`flax.linen.Conv` with 'SAME' padding (same parameters and computation),
  whose bias is added by `add_bias`."""
  features: int
  kernel_size: int = 5
  strides: int = 2
  dtype: Optional[jnp.dtype] = None
  fast_backward: bool = True   # `downsample_conv`; False: JAX's own autodiff (jvp works)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param('kernel', glorot_uniform, (k, k, x.shape[-1], self.features),
                        jnp.float32)
    bias = self.param('bias', zeros, (self.features,), jnp.float32)
    dtype = self.dtype or jnp.promote_types(x.dtype, jnp.float32)
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    if self.fast_backward:
      y = downsample_conv(x, kernel, self.strides)
    else:
      y = jax.lax.conv_general_dilated(x, kernel, (self.strides, self.strides), 'SAME',
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return add_bias(y, bias)


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
    y = jax.lax.dot_general(x.astype(dtype), kernel.astype(dtype),
                            (((x.ndim - 1,), (0,)), ((), ())))
    return add_bias(y, bias)


def conv(features: int, kernel_size: int = 5, strides: int = 2,
         dtype: Optional[jnp.dtype] = None, name: Optional[str] = None,
         fast_backward: bool = True) -> Conv:
  """The reference's conv layer: 'SAME' padding, Glorot-uniform, zero bias."""
  return Conv(features, kernel_size, strides, dtype=dtype, fast_backward=fast_backward,
              name=name)


def dense(features: int, dtype: Optional[jnp.dtype] = None,
          bias_init=zeros, name: Optional[str] = None) -> Dense:
  """The reference's dense layer: Glorot-uniform weights, zero bias."""
  return Dense(features, dtype=dtype, bias_init=bias_init, name=name)


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
