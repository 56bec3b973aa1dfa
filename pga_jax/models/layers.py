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

from pga_jax.models import kernel_choice

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
  rows = index[:, None, :, None]  # (phase_r, 1, n, 1)
  cols = index[None, :, None, :]  # (1, phase_c, 1, n)
  gathered = padded[rows, cols]  # (pr, pc, n, n, in, out)
  gathered = jnp.transpose(gathered, (2, 3, 4, 0, 1, 5))
  return gathered.reshape(n, n, cin, stride * stride * cout), -low, high


def _upsample_fused(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  n, h, w, _ = x.shape
  cout = kernel.shape[-1]
  fused, pad_low, pad_high = phase_kernel(kernel.astype(x.dtype), stride)
  y = jax.lax.conv_general_dilated(
    x,
    fused,
    window_strides=(1, 1),
    padding=((pad_low, pad_high), (pad_low, pad_high)),
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
  )
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
      cols.append(
        jax.lax.conv_general_dilated(
          x,
          sub,
          window_strides=(1, 1),
          padding=((-min(row_d), max(row_d)), (-min(col_d), max(col_d))),
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        )
      )
    rows.append(jnp.stack(cols, axis=3))  # (n, h, w, phase_c, out)
  y = jnp.stack(rows, axis=2)  # (n, h, phase_r, w, phase_c, out)
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
    images,
    kernel,
    window_strides=(stride, stride),
    padding=((low, high), (low, high)),
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
  )


def transposed_conv(x: jax.Array, kernel: jax.Array, stride: int, form: str = 'phase') -> jax.Array:
  """`lax.conv_transpose(x, kernel, (s, s), 'SAME')` without an autodiff rule of
  its own (it is used inside the custom VJPs below), in one of two exact forms:
  'xla', XLA's own (lhs-dilated) convolution, or 'phase', the per-phase
  decomposition (`_upsample_per_phase`). Which is faster depends on the
  backend and shape (on XLA:CPU at batch 64 'xla' was 60x slower for
  4x4x512 -> 8x8x256 but faster with few output channels; docs/benchmarks.md):
  the callers' forms choose by measurement (`kernel_choice`).
  """
  if form == 'xla':
    return jax.lax.conv_transpose(
      x, kernel, (stride, stride), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
    )
  if form == 'phase':
    return _upsample_per_phase(x, kernel, stride)
  raise ValueError(f"transposed_conv form must be 'xla' or 'phase', got {form!r}")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _upsample_adjoint(x: jax.Array, kernel: jax.Array, stride: int, forward: str) -> jax.Array:
  return transposed_conv(x, kernel, stride, forward)


def _upsample_adjoint_forward(x, kernel, stride, forward):
  return _upsample_adjoint(x, kernel, stride, forward), (x, kernel)


def _upsample_adjoint_backward(stride, forward, residuals, cotangent):
  """y = C^T x with C the strided convolution by `_adjoint_kernel(kernel)`,
  so <g, y> = <C g, x>: dx = C g (a strided convolution) and dkernel is the
  weight gradient of C g against x, both the fast kinds of convolution on
  XLA:CPU (the autodiff rule of the lhs-dilated forward is not)."""
  del forward
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
  by phase decomposition (JAX's own rule is the lhs-dilated convolution that
  XLA:CPU runs pathologically slowly for some shapes); dkernel is JAX's."""
  x, kernel = residuals
  d_x = transposed_conv(cotangent, _adjoint_kernel(kernel), stride, 'phase')
  _, kernel_vjp = jax.vjp(lambda k: _strided_conv(x, k, stride), kernel)
  return d_x, kernel_vjp(cotangent)[0]


_downsample.defvjp(_downsample_forward, _downsample_backward)


# --------------------------------------------------------------------------
# Forms, candidates and the measured choice (pga_jax.models.kernel_choice).
# --------------------------------------------------------------------------

# Config / model level choice: 'auto' measures; the others force a family.
CONV_IMPLS = ('auto', 'xla', 'phase', 'adjoint')

# Exact forms of the stride-s transposed convolution layer (UpConv):
#   'xla'          lax.conv_transpose and JAX's autodiff (jvp works);
#   'phase'        per-phase stride-1 convolutions and JAX's autodiff (jvp works);
#   'adjoint'      custom VJP: forward by phase decomposition, backward from
#                  the adjoint strided convolution (reverse mode only);
#   'adjoint_xla'  the same backward, forward by lax.conv_transpose;
#   'fused'        all phases as one convolution (zero taps included).
UPSAMPLE_FORMS = ('xla', 'phase', 'adjoint', 'adjoint_xla', 'fused')
# Exact forms of the stride-s convolution (the encoders' Conv):
#   'xla'    lax.conv_general_dilated and JAX's autodiff (jvp works);
#   'phase'  custom VJP, its input gradient (a transposed convolution) by
#            phase decomposition (reverse mode only).
DOWNSAMPLE_FORMS = ('xla', 'phase')


def layer_forms(conv_impl: str) -> tuple[str, str]:
  """(upsample mode, downsample mode) of a config's `conv_impl`.

  'xla': XLA's own convolutions and JAX's autodiff everywhere (forward-mode
  capable); 'phase': every transposed convolution (the decoder's layers and
  the encoder's input gradients) by phase decomposition; 'adjoint': the
  decoder's backward passes from the adjoint strided convolution, the
  encoder's input gradients by phase decomposition; 'auto': measured per
  layer shape.
  """
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f'conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}')
  return {
    'auto': ('auto', 'auto'),
    'xla': ('xla', 'xla'),
    'phase': ('phase', 'phase'),
    'adjoint': ('adjoint', 'phase'),
  }[conv_impl]


def _adjoint_applies(kernel_shape, stride: int) -> bool:
  return kernel_shape[0] == kernel_shape[1] >= stride


def _downsample_applies(x_shape, kernel_shape, stride: int) -> bool:
  return (
    stride > 1
    and _adjoint_applies(kernel_shape, stride)
    and x_shape[1] % stride == 0
    and x_shape[2] % stride == 0
  )


def _layer_form(op: str, conv_impl: str, x_shape, kernel_shape, stride: int) -> str:
  """The form a layer of `op` runs: its `conv_impl`'s (`layer_forms`), except
  where that custom form does not apply to these shapes: then 'phase' for an
  'adjoint' upsampling layer and 'xla' for a downsampling one."""
  if op == 'upsample':
    mode = layer_forms(conv_impl)[0]
    if mode == 'adjoint' and not _adjoint_applies(kernel_shape, stride):
      return 'phase'
    return mode
  mode = layer_forms(conv_impl)[1]
  if mode != 'xla' and not _downsample_applies(x_shape, kernel_shape, stride):
    return 'xla'
  return mode


def candidate_forms(op: str, platform: str, x_shape, kernel_shape, stride: int) -> tuple:
  """The forms `kernel_choice` times for one layer, in tie-breaking order.

  XLA's own convolution ('xla') is a candidate everywhere; off CPU it comes
  first (cuDNN and the TPU compiler have tuned convolutions, so it is the
  likely winner and wins ties); on CPU the custom forms that won the
  measurements of docs/benchmarks.md come first. 'fused' is never measured
  (it computes the zero taps of 'phase').
  """
  if op == 'upsample':
    custom = ('adjoint', 'adjoint_xla') if _adjoint_applies(kernel_shape, stride) else ()
    if platform == 'cpu':
      return custom + ('phase', 'xla')
    return ('xla',) + custom + ('phase',)
  if op == 'downsample':
    if not _downsample_applies(x_shape, kernel_shape, stride):
      return ('xla',)
    return ('phase', 'xla') if platform == 'cpu' else ('xla', 'phase')
  raise ValueError(f"op must be 'upsample' or 'downsample', got {op!r}")


def _upsample_form(x: jax.Array, kernel: jax.Array, stride: int, form: str) -> jax.Array:
  if form == 'xla':
    return transposed_conv(x, kernel, stride, 'xla')
  if form in ('phase', 'per_phase'):
    return _upsample_per_phase(x, kernel, stride)
  if form == 'fused':
    return _upsample_fused(x, kernel, stride)
  if form in ('adjoint', 'adjoint_xla'):
    if not _adjoint_applies(kernel.shape, stride):
      raise ValueError(
        f'upsample_conv mode {form!r} needs a square kernel at least as '
        f'large as the stride ({stride}), got {kernel.shape}'
      )
    return _upsample_adjoint(x, kernel, stride, 'phase' if form == 'adjoint' else 'xla')
  raise ValueError(f"upsample_conv mode must be 'auto' or one of {UPSAMPLE_FORMS}, got {form!r}")


def _downsample_form(x: jax.Array, kernel: jax.Array, stride: int, form: str) -> jax.Array:
  if form == 'xla':
    return jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
    )
  if form == 'phase':
    if not _downsample_applies(x.shape, kernel.shape, stride):
      raise ValueError(
        f"downsample_conv mode 'phase' needs stride > 1, a square kernel at "
        f'least as large as the stride ({stride}) and an input size divisible '
        f'by it, got input {x.shape}, kernel {kernel.shape}'
      )
    return _downsample(x, kernel, stride)
  raise ValueError(
    f"downsample_conv mode must be 'auto' or one of {DOWNSAMPLE_FORMS}, got {form!r}"
  )


def _timed_candidate(op: str, form: str, x_shape, kernel_shape, stride: int, dtype):
  """A compiled zero-argument function: the form's forward pass and its VJP for
  the input and the kernel on fixed random inputs of these shapes."""
  apply = _upsample_form if op == 'upsample' else _downsample_form
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], x_shape, jnp.float32).astype(dtype)
  kernel = (0.05 * jax.random.normal(keys[1], kernel_shape, jnp.float32)).astype(dtype)
  y_shape = jax.eval_shape(lambda a, b: apply(a, b, stride, form), x, kernel).shape
  cotangent = jax.random.normal(keys[2], y_shape, jnp.float32).astype(dtype)

  def step(x_, kernel_, cotangent_):
    y, vjp = jax.vjp(lambda a, b: apply(a, b, stride, form), x_, kernel_)
    return y, vjp(cotangent_)

  compiled = jax.jit(step).lower(x, kernel, cotangent).compile()
  return lambda: compiled(x, kernel, cotangent)


def measured_form(
  op: str,
  x_shape,
  kernel_shape,
  stride: int,
  dtype,
  path: Optional[str] = None,
  memo: Optional[dict] = None,
) -> str:
  """The fastest form of `op` ('upsample' or 'downsample') for these static
  shapes on the default device, measured once and cached (`kernel_choice`)."""
  platform, device_kind = kernel_choice.device_identity()
  x_shape, kernel_shape = tuple(x_shape), tuple(kernel_shape)
  candidates = candidate_forms(op, platform, x_shape, kernel_shape, stride)
  key = kernel_choice.choice_key(op, platform, device_kind, x_shape, kernel_shape, stride, dtype)
  return kernel_choice.choose(
    key,
    candidates,
    lambda form: _timed_candidate(op, form, x_shape, kernel_shape, stride, dtype),
    path=path,
    memo=memo,
  )


def downsample_conv(
  x: jax.Array, kernel: jax.Array, stride: int = 2, mode: str = 'auto'
) -> jax.Array:
  """Exactly `lax.conv_general_dilated(x, kernel, (s, s), 'SAME')` (NHWC,
  HWIO), in one of `DOWNSAMPLE_FORMS`: 'xla' (JAX's own autodiff) or
  'phase' (a custom VJP whose input gradient is a phase-decomposed
  transposed convolution, `_downsample_backward`; reverse mode only).
  'auto' measures which is faster for the shape (`measured_form`); the
  custom form only applies where the input's height and width are multiples
  of the stride and the kernel is square and at least the stride (the
  reference's encoders), elsewhere 'auto' is 'xla'.
  """
  if mode == 'auto':
    mode = measured_form('downsample', x.shape, kernel.shape, stride, x.dtype)
  return _downsample_form(x, kernel, stride, mode)


def upsample_conv(
  x: jax.Array, kernel: jax.Array, stride: int = 2, mode: str = 'auto'
) -> jax.Array:
  """Exactly `jax.lax.conv_transpose(x, kernel, (s, s), 'SAME')`, in one of
  `UPSAMPLE_FORMS` (values and gradients agree to float rounding).

  Phase (sub-pixel) decomposition: output pixel `s*m + p` only sees the
  kernel taps of phase `p`, so the transposed convolution is `s*s` ordinary
  (stride-1) convolutions, interleaved (depth-to-space); its gradients are
  ordinary convolutions too. The adjoint forms compute the backward pass
  from the strided convolution whose transpose it is
  (`_upsample_adjoint_backward`, a `jax.custom_vjp`: reverse mode only; for
  `jax.jvp` / `jacfwd` use 'xla' or 'phase'). 'per_phase' is an alias of
  'phase'. 'auto' (default) measures the candidates for the shape on this
  backend and device (`measured_form`, cached on disk).
  """
  if mode == 'auto':
    mode = measured_form('upsample', x.shape, kernel.shape, stride, x.dtype)
  return _upsample_form(x, kernel, stride, mode)


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
  (`conv_parameters`), a convolution in the form `_layer_form` picks for the
  shapes, then `add_bias`. A subclass declares its stride, `dtype` and
  `conv_impl`, and its compact `__call__` returns `_output`."""

  features: int
  kernel_size: int = 5

  def _output(self, x: jax.Array, op: str, stride: int, dtype) -> jax.Array:
    """The layer's output for `op` ('upsample' or 'downsample'), computed in `dtype`."""
    kernel, bias = conv_parameters(self, x.shape[-1])
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    mode = _layer_form(op, self.conv_impl, x.shape, kernel.shape, stride)
    convolve = upsample_conv if op == 'upsample' else downsample_conv
    return add_bias(convolve(x, kernel, stride, mode), bias)


class UpConv(_ConvLayer):
  """Stride-2 'SAME' transposed convolution with a fast exact implementation.

  Parameters have the names and shapes of `flax.linen.ConvTranspose`
  (`kernel`: (kh, kw, in, out), `bias`: (out,)), so the same weights can be
  fed to either; `tests/test_layers.py` checks they agree.
  `conv_impl` (see `layer_forms`): 'auto' (default) runs the form measured
  fastest for the shape on this device; 'xla' computes it with
  `lax.conv_transpose` and JAX's own autodiff (forward-mode capable);
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
  whose bias is added by `add_bias`. `conv_impl` (see `layer_forms`): how a
  strided convolution's backward pass is computed ('auto': measured; 'xla':
  JAX's own autodiff, jvp works); a stride-1 convolution is always lax's."""

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
