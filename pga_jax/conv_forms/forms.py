"""Exact forms of the strided and transposed convolutions of the models.

Every form computes the same values and gradients as `lax`'s convolution and
its autodiff, up to float rounding; they differ in speed, which depends on the
backend, device, shape and dtype (XLA:CPU runs some of JAX's own convolution
gradients pathologically slowly; docs/benchmarks.md):

- upsampling, `jax.lax.conv_transpose(x, kernel, (s, s), 'SAME')`, the
  decoders' layers: `UPSAMPLE_FORMS`, by XLA's own convolution, by phase
  (sub-pixel) decomposition into stride-1 convolutions, or with a custom VJP
  from the adjoint strided convolution;
- downsampling, `lax.conv_general_dilated(x, kernel, (s, s), 'SAME')`, the
  encoders' layers: `DOWNSAMPLE_FORMS`, by XLA's own convolution and JAX's
  autodiff, or with a custom VJP whose input gradient is a phase-decomposed
  transposed convolution.

`upsample_form` and `downsample_form` run a named form; `layer_form` maps a
model's `conv_impl` to the form of one layer ('auto' is left for
`pga_jax.conv_forms.choice` to measure among `candidate_forms`). Arrays are
NHWC, kernels HWIO.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


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
  the callers' forms choose by measurement (`pga_jax.conv_forms.choice`).
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
# The forms by name, where each applies, and the candidates `choice` times.
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


def layer_form(op: str, conv_impl: str, x_shape, kernel_shape, stride: int) -> str:
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
  """The forms `choice` times for one layer, in tie-breaking order.

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


def upsample_form(x: jax.Array, kernel: jax.Array, stride: int, form: str) -> jax.Array:
  """The stride-`stride` transposed convolution of x by kernel in `form` (one of
  `UPSAMPLE_FORMS`, or 'per_phase', an alias of 'phase')."""
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


def downsample_form(x: jax.Array, kernel: jax.Array, stride: int, form: str) -> jax.Array:
  """The stride-`stride` convolution of x by kernel in `form` (one of `DOWNSAMPLE_FORMS`)."""
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
