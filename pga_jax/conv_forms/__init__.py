"""The models' strided and transposed convolutions, in the form measured fastest.

Every form is exact (`forms`: values and gradients of `lax`'s convolution and
its autodiff, up to float rounding); which one runs is measured per shape and
device and cached on the machine (`choice`). The models and the trainer reach
both through this interface:

- `convolve`: a model layer's convolution in the form its `conv_impl` chooses
  (`CONV_IMPLS`; 'auto' measures);
- `record` and `pin`: the trainer records the forms a run computed with in
  its directory (`RUN_FILE`) and pins them when the run resumes, so it keeps
  its float rounding whatever the machine's cache says by then;
- `choices_made`, `forget` and `cache_path` for benchmark reports and
  `pga benchmark --remeasure`.
"""

from __future__ import annotations

import json

import jax
from absl import logging

from pga_jax import storage
from pga_jax.conv_forms import choice, forms
from pga_jax.conv_forms.choice import cache_path, choices_made, forget
from pga_jax.conv_forms.forms import CONV_IMPLS, DOWNSAMPLE_FORMS, UPSAMPLE_FORMS

__all__ = [
  'CONV_IMPLS',
  'DOWNSAMPLE_FORMS',
  'RUN_FILE',
  'UPSAMPLE_FORMS',
  'cache_path',
  'choices_made',
  'convolve',
  'downsample_conv',
  'forget',
  'pin',
  'read_recorded',
  'record',
  'upsample_conv',
]

# The forms a run computes with, in its directory (`record`, `pin`).
RUN_FILE = 'conv_forms.json'


def downsample_conv(
  x: jax.Array, kernel: jax.Array, stride: int = 2, mode: str = 'auto'
) -> jax.Array:
  """Exactly `lax.conv_general_dilated(x, kernel, (s, s), 'SAME')` (NHWC,
  HWIO), in one of `DOWNSAMPLE_FORMS`: 'xla' (JAX's own autodiff) or
  'phase' (a custom VJP whose input gradient is a phase-decomposed
  transposed convolution; reverse mode only).
  'auto' measures which is faster for the shape (`choice.measured_form`); the
  custom form only applies where the input's height and width are multiples
  of the stride and the kernel is square and at least the stride (the
  reference's encoders), elsewhere 'auto' is 'xla'.
  """
  if mode == 'auto':
    mode = choice.measured_form('downsample', x.shape, kernel.shape, stride, x.dtype)
  return forms.downsample_form(x, kernel, stride, mode)


def upsample_conv(
  x: jax.Array, kernel: jax.Array, stride: int = 2, mode: str = 'auto'
) -> jax.Array:
  """Exactly `jax.lax.conv_transpose(x, kernel, (s, s), 'SAME')`, in one of
  `UPSAMPLE_FORMS` (values and gradients agree to float rounding).

  Phase (sub-pixel) decomposition: output pixel `s*m + p` only sees the
  kernel taps of phase `p`, so the transposed convolution is `s*s` ordinary
  (stride-1) convolutions, interleaved (depth-to-space); its gradients are
  ordinary convolutions too. The adjoint forms compute the backward pass
  from the strided convolution whose transpose it is (a `jax.custom_vjp`:
  reverse mode only; for `jax.jvp` / `jacfwd` use 'xla' or 'phase').
  'per_phase' is an alias of 'phase'. 'auto' (default) measures the
  candidates for the shape on this backend and device
  (`choice.measured_form`, cached on disk).
  """
  if mode == 'auto':
    mode = choice.measured_form('upsample', x.shape, kernel.shape, stride, x.dtype)
  return forms.upsample_form(x, kernel, stride, mode)


def convolve(op: str, x: jax.Array, kernel: jax.Array, stride: int, conv_impl: str) -> jax.Array:
  """A model layer's convolution, 'upsample' (transposed) or 'downsample'
  (strided), in the form its `conv_impl` gives for these shapes
  (`forms.layer_form`; 'auto': measured)."""
  form = forms.layer_form(op, conv_impl, x.shape, kernel.shape, stride)
  convolve_in = upsample_conv if op == 'upsample' else downsample_conv
  return convolve_in(x, kernel, stride, form)


def record(workdir: str) -> None:
  """Adds the forms this process has chosen to the run's RUN_FILE.

  Process 0 only; written atomically, and only when something is new.
  """
  if jax.process_index() != 0:
    return
  chosen = choices_made()
  recorded = read_recorded(workdir)
  if all(recorded.get(key) == form for key, form in chosen.items()):
    return
  merged = dict(recorded, **chosen)
  storage.write_json(storage.join(workdir, RUN_FILE), merged, indent=1)


def read_recorded(workdir: str) -> dict:
  """{key: form} recorded by `record` ({} if none, or unreadable: only speed)."""
  path = storage.join(workdir, RUN_FILE)
  if not storage.exists(path):
    return {}
  try:
    with storage.open(path) as f:
      recorded = json.load(f)
  except (OSError, ValueError) as err:
    logging.warning('Ignoring unreadable %s (%s); forms are chosen again.', path, err)
    return {}
  if not isinstance(recorded, dict):
    return {}
  return {str(k): str(v) for k, v in recorded.items()}


def pin(workdir: str) -> dict:
  """Makes this process compute with the forms the run in `workdir` recorded
  (`choice.pin`), and returns them."""
  recorded = read_recorded(workdir)
  choice.pin(recorded)
  return recorded
