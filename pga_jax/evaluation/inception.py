"""FID Inception-v3 feature network in flax.linen.

This is a port of the Inception-v3 variant that pytorch-fid uses for FID (its
``fid_inception_v3``), i.e. the TensorFlow Inception graph of 2015-12-05 used by
the original TTUR FID code. It differs from the usual torchvision/Keras
Inception-v3 in a few places, all reproduced here:

* the average pools inside the A, C and first E block ignore the zero padding
  (``count_include_pad=False``);
* the pool branch of the last E block (``Mixed_7c``) uses a 3x3 *max* pool;
* the classifier has 1008 classes (only needed for logits, not for FID);
* every convolution is bias-free and followed by batch norm with eps=0.001,
  always in inference mode (running statistics stored as parameters).

Layout is NHWC. Inputs are images in [-1, 1] of any size, with 1 (grey) or 3
channels. They go through pytorch-fid's input pipeline: grey is repeated to RGB,
the image is mapped to [0, 1], bilinearly resized to 299x299 exactly like
``torch.nn.functional.interpolate(mode='bilinear', align_corners=False)``
(no antialiasing), and mapped back to [-1, 1] with ``2 * x - 1``. So feeding
``x`` here gives the same pool3 features as feeding ``(x + 1) / 2`` (NCHW) to
pytorch-fid's ``InceptionV3``.

The weights come from pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``,
converted once with ``python -m pga_jax.evaluation.convert_inception``.
Parameter names mirror the torch state_dict: ``Mixed_5b.branch1x1.conv.weight``
becomes ``params['Mixed_5b']['branch1x1']['conv']['kernel']``, and the batch
norm ``weight/bias/running_mean/running_var`` become ``scale/bias/mean/var``.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Dict, Iterable, Mapping, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
  'BLOCK_NAMES',
  'FEATURE_DIM',
  'FID_WEIGHTS_FILENAME',
  'FID_WEIGHTS_URL',
  'INPUT_SIZE',
  'InceptionV3',
  'bilinear_resize',
  'inception_blocks',
  'inception_features',
  'load_inception',
  'preprocess_images',
  'save_inception_params',
]

INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008
BN_EPS = 1e-3

FID_WEIGHTS_FILENAME = 'pt_inception-2015-12-05-6726825d.pth'
FID_WEIGHTS_URL = (
  'https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/' + FID_WEIGHTS_FILENAME
)

# Names of the outputs returned with ``return_blocks=True``, in network order.
# pytorch-fid's four output blocks are MaxPool_3a_3x3 (64 ch), MaxPool_5a_3x3
# (192 ch), Mixed_6e (768 ch) and pool3 (2048).
BLOCK_NAMES = (
  'Conv2d_1a_3x3',
  'Conv2d_2a_3x3',
  'Conv2d_2b_3x3',
  'MaxPool_3a_3x3',
  'Conv2d_3b_1x1',
  'Conv2d_4a_3x3',
  'MaxPool_5a_3x3',
  'Mixed_5b',
  'Mixed_5c',
  'Mixed_5d',
  'Mixed_6a',
  'Mixed_6b',
  'Mixed_6c',
  'Mixed_6d',
  'Mixed_6e',
  'Mixed_7a',
  'Mixed_7b',
  'Mixed_7c',
  'pool3',
)

_HIGHEST = lax.Precision.HIGHEST

Array = Any


# ---------------------------------------------------------------------------
# Input pipeline
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _linear_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out_size, in_size) matrix of 1-D linear interpolation weights.

  Reproduces PyTorch's ``align_corners=False`` rule (also used for
  downsampling, since antialiasing is off): the source coordinate of output
  pixel ``i`` is ``(i + 0.5) * in/out - 0.5`` clamped below at 0, its two
  neighbours are ``floor`` and ``floor + 1`` (clamped to the last pixel).
  The coordinates are float32 as in PyTorch's CPU kernel for float input,
  where ``scale * (i + 0.5) - 0.5`` compiles to one fused multiply-add
  (rounded once): that is what is reproduced here (exactly, as
  ``float32(scale) * (i + 0.5)`` is exact in float64).
  """
  f32 = np.float32
  scale = f32(in_size) / f32(out_size)
  dst = np.arange(out_size, dtype=np.float64)
  src = (np.float64(scale) * (dst + 0.5) - 0.5).astype(f32)
  src = np.maximum(src, f32(0.0))
  lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  w_hi = np.clip(src - lo.astype(f32), f32(0.0), f32(1.0)).astype(f32)
  w_lo = (f32(1.0) - w_hi).astype(f32)
  mat = np.zeros((out_size, in_size), dtype=f32)
  rows = np.arange(out_size)
  np.add.at(mat, (rows, lo), w_lo)
  np.add.at(mat, (rows, hi), w_hi)
  mat.setflags(write=False)
  return mat


def bilinear_resize(x: Array, size: Tuple[int, int] = (INPUT_SIZE, INPUT_SIZE)) -> Array:
  """Resize NHWC ``x`` like ``F.interpolate(mode='bilinear', align_corners=False)``.

  No antialiasing (the PyTorch default). Implemented as two small dense
  interpolation matrices (width first, then height, the same order of
  operations as PyTorch's CPU kernel). Returns ``x`` unchanged when it already
  has the target size (PyTorch's result is the identity then too).
  """
  x = jnp.asarray(x)
  _, h, w, _ = x.shape
  out_h, out_w = size
  if (h, w) == (out_h, out_w):
    return x
  if w != out_w:
    mw = jnp.asarray(_linear_resize_matrix(w, out_w))
    x = jnp.einsum('pw,nhwc->nhpc', mw, x, precision=_HIGHEST)
  if h != out_h:
    mh = jnp.asarray(_linear_resize_matrix(h, out_h))
    x = jnp.einsum('oh,nhwc->nowc', mh, x, precision=_HIGHEST)
  return x


def _check_images(images: Array) -> None:
  shape = tuple(images.shape)
  if len(shape) not in (3, 4):
    raise ValueError(f'expected images of shape (N, H, W, C) or (N, H, W), got {shape}')
  if len(shape) == 4 and shape[-1] not in (1, 3):
    raise ValueError(
      f'expected 1 (grey) or 3 (RGB) channels in the last axis (NHWC), got shape {shape}'
    )
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise TypeError(
      f'expected floating point images in [-1, 1], got dtype {images.dtype}; '
      'convert uint8 images with x / 127.5 - 1'
    )


def preprocess_images(images: Array) -> Array:
  """pytorch-fid's input pipeline for images in [-1, 1].

  (N, H, W, C) with C in {1, 3} (or (N, H, W) grey) float images in [-1, 1]
  -> (N, 299, 299, 3) float32 network input in [-1, 1]: grey -> RGB, map to
  [0, 1], bilinear resize to 299x299, ``2 * x - 1``.
  """
  x = jnp.asarray(images)
  _check_images(x)
  if x.ndim == 3:
    x = x[..., None]
  x = x.astype(jnp.float32)
  x = (x + 1.0) / 2.0  # the [0, 1] images pytorch-fid takes
  x = bilinear_resize(x, (INPUT_SIZE, INPUT_SIZE))
  if x.shape[-1] == 1:
    # Channels are resized independently, so repeating after the resize is
    # the same as repeating before it (and 3x cheaper).
    x = jnp.repeat(x, 3, axis=-1)
  return 2.0 * x - 1.0


# ---------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------


class FrozenBatchNorm(nn.Module):
  """Inference-mode batch norm; running statistics are ordinary params."""

  epsilon: float = BN_EPS

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
    mean = self.param('mean', nn.initializers.zeros, (c,), jnp.float32)
    var = self.param('var', nn.initializers.ones, (c,), jnp.float32)
    # Same algebra as PyTorch's CPU inference kernel: y = x * a + b.
    alpha = scale * (1.0 / jnp.sqrt(var + self.epsilon))
    beta = bias - mean * alpha
    return x * alpha + beta


class BasicConv2d(nn.Module):
  """Bias-free conv + frozen batch norm + ReLU (torchvision's BasicConv2d)."""

  features: int
  kernel_size: Tuple[int, int]
  strides: Tuple[int, int] = (1, 1)
  padding: Tuple[int, int] = (0, 0)
  precision: Any = _HIGHEST

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = nn.Conv(
      self.features,
      kernel_size=tuple(self.kernel_size),
      strides=tuple(self.strides),
      padding=[(p, p) for p in self.padding],
      use_bias=False,
      precision=self.precision,
      name='conv',
    )(x)
    x = FrozenBatchNorm(name='bn')(x)
    return nn.relu(x)


def _avg_pool_3x3_exclude_pad(x: Array) -> Array:
  # F.avg_pool2d(kernel_size=3, stride=1, padding=1, count_include_pad=False)
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_same(x: Array) -> Array:
  # F.max_pool2d(kernel_size=3, stride=1, padding=1); padding acts as -inf.
  return nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


def _max_pool_3x3_s2(x: Array) -> Array:
  # nn.MaxPool2d(kernel_size=3, stride=2) / F.max_pool2d(..., stride=2)
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')


class _BasicConvs(nn.Module):
  """A module made of `BasicConv2d` layers at its `precision` (a field each
  subclass declares after its own)."""

  def conv(self, features: int, kernel_size: Tuple[int, int], **kwargs) -> BasicConv2d:
    """A `BasicConv2d` at this module's precision; built in its compact `__call__`."""
    return BasicConv2d(features, kernel_size, precision=self.precision, **kwargs)


class FIDInceptionA(_BasicConvs):
  pool_features: int
  precision: Any = _HIGHEST

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b1 = self.conv(64, (1, 1), name='branch1x1')(x)

    b5 = self.conv(48, (1, 1), name='branch5x5_1')(x)
    b5 = self.conv(64, (5, 5), padding=(2, 2), name='branch5x5_2')(b5)

    b3 = self.conv(64, (1, 1), name='branch3x3dbl_1')(x)
    b3 = self.conv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(b3)
    b3 = self.conv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_3')(b3)

    bp = _avg_pool_3x3_exclude_pad(x)
    bp = self.conv(self.pool_features, (1, 1), name='branch_pool')(bp)
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_BasicConvs):
  """Grid reduction 35x35 -> 17x17 (Mixed_6a)."""

  precision: Any = _HIGHEST

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b3 = self.conv(384, (3, 3), strides=(2, 2), name='branch3x3')(x)

    bd = self.conv(64, (1, 1), name='branch3x3dbl_1')(x)
    bd = self.conv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = self.conv(96, (3, 3), strides=(2, 2), name='branch3x3dbl_3')(bd)

    bp = _max_pool_3x3_s2(x)
    return jnp.concatenate([b3, bd, bp], axis=-1)


class FIDInceptionC(_BasicConvs):
  channels_7x7: int
  precision: Any = _HIGHEST

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c7 = self.channels_7x7
    b1 = self.conv(192, (1, 1), name='branch1x1')(x)

    b7 = self.conv(c7, (1, 1), name='branch7x7_1')(x)
    b7 = self.conv(c7, (1, 7), padding=(0, 3), name='branch7x7_2')(b7)
    b7 = self.conv(192, (7, 1), padding=(3, 0), name='branch7x7_3')(b7)

    bd = self.conv(c7, (1, 1), name='branch7x7dbl_1')(x)
    bd = self.conv(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_2')(bd)
    bd = self.conv(c7, (1, 7), padding=(0, 3), name='branch7x7dbl_3')(bd)
    bd = self.conv(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_4')(bd)
    bd = self.conv(192, (1, 7), padding=(0, 3), name='branch7x7dbl_5')(bd)

    bp = _avg_pool_3x3_exclude_pad(x)
    bp = self.conv(192, (1, 1), name='branch_pool')(bp)
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_BasicConvs):
  """Grid reduction 17x17 -> 8x8 (Mixed_7a)."""

  precision: Any = _HIGHEST

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b3 = self.conv(192, (1, 1), name='branch3x3_1')(x)
    b3 = self.conv(320, (3, 3), strides=(2, 2), name='branch3x3_2')(b3)

    b7 = self.conv(192, (1, 1), name='branch7x7x3_1')(x)
    b7 = self.conv(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
    b7 = self.conv(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
    b7 = self.conv(192, (3, 3), strides=(2, 2), name='branch7x7x3_4')(b7)

    bp = _max_pool_3x3_s2(x)
    return jnp.concatenate([b3, b7, bp], axis=-1)


class FIDInceptionE(_BasicConvs):
  """E block; ``pool='avg'`` is FIDInceptionE_1, ``pool='max'`` FIDInceptionE_2."""

  pool: str = 'avg'
  precision: Any = _HIGHEST

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b1 = self.conv(320, (1, 1), name='branch1x1')(x)

    b3 = self.conv(384, (1, 1), name='branch3x3_1')(x)
    b3 = jnp.concatenate(
      [
        self.conv(384, (1, 3), padding=(0, 1), name='branch3x3_2a')(b3),
        self.conv(384, (3, 1), padding=(1, 0), name='branch3x3_2b')(b3),
      ],
      axis=-1,
    )

    bd = self.conv(448, (1, 1), name='branch3x3dbl_1')(x)
    bd = self.conv(384, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = jnp.concatenate(
      [
        self.conv(384, (1, 3), padding=(0, 1), name='branch3x3dbl_3a')(bd),
        self.conv(384, (3, 1), padding=(1, 0), name='branch3x3dbl_3b')(bd),
      ],
      axis=-1,
    )

    if self.pool == 'avg':
      bp = _avg_pool_3x3_exclude_pad(x)
    elif self.pool == 'max':
      bp = _max_pool_3x3_same(x)
    else:
      raise ValueError(f"pool must be 'avg' or 'max', got {self.pool!r}")
    bp = self.conv(192, (1, 1), name='branch_pool')(bp)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(_BasicConvs):
  """FID Inception-v3 (pytorch-fid's ``fid_inception_v3``), NHWC.

  Attributes:
    preprocess: apply :func:`preprocess_images` (grey -> RGB, resize to
      299x299 like pytorch-fid, normalisation) to the input. With False the
      input must already be the (N, 299, 299, 3) network input in [-1, 1].
    include_fc: also build the 1008-way classifier ``fc``; its logits are
      returned as ``blocks['logits']`` when ``return_blocks=True``.
    precision: precision of the convolutions / matmuls (HIGHEST by default
      so that GPUs/TPUs do not silently use TF32/bf16 passes).

  ``__call__(images, return_blocks=False)`` returns the pool3 features
  (N, 2048), or ``(pool3, blocks)`` where ``blocks`` maps every name in
  ``BLOCK_NAMES`` (stem convs, the two stem max pools, every Mixed block,
  pool3) to its NHWC output.
  """

  preprocess: bool = True
  include_fc: bool = False
  precision: Any = _HIGHEST

  @nn.compact
  def __call__(self, images: Array, return_blocks: bool = False):
    p = self.precision
    blocks: Dict[str, Array] = {}

    def keep(name, value):
      blocks[name] = value
      return value

    x = preprocess_images(images) if self.preprocess else jnp.asarray(images)

    # pytorch-fid block 0
    x = keep('Conv2d_1a_3x3', self.conv(32, (3, 3), strides=(2, 2), name='Conv2d_1a_3x3')(x))
    x = keep('Conv2d_2a_3x3', self.conv(32, (3, 3), name='Conv2d_2a_3x3')(x))
    x = keep('Conv2d_2b_3x3', self.conv(64, (3, 3), padding=(1, 1), name='Conv2d_2b_3x3')(x))
    x = keep('MaxPool_3a_3x3', _max_pool_3x3_s2(x))
    # block 1
    x = keep('Conv2d_3b_1x1', self.conv(80, (1, 1), name='Conv2d_3b_1x1')(x))
    x = keep('Conv2d_4a_3x3', self.conv(192, (3, 3), name='Conv2d_4a_3x3')(x))
    x = keep('MaxPool_5a_3x3', _max_pool_3x3_s2(x))
    # block 2
    x = keep('Mixed_5b', FIDInceptionA(32, precision=p, name='Mixed_5b')(x))
    x = keep('Mixed_5c', FIDInceptionA(64, precision=p, name='Mixed_5c')(x))
    x = keep('Mixed_5d', FIDInceptionA(64, precision=p, name='Mixed_5d')(x))
    x = keep('Mixed_6a', InceptionB(precision=p, name='Mixed_6a')(x))
    x = keep('Mixed_6b', FIDInceptionC(128, precision=p, name='Mixed_6b')(x))
    x = keep('Mixed_6c', FIDInceptionC(160, precision=p, name='Mixed_6c')(x))
    x = keep('Mixed_6d', FIDInceptionC(160, precision=p, name='Mixed_6d')(x))
    x = keep('Mixed_6e', FIDInceptionC(192, precision=p, name='Mixed_6e')(x))
    # block 3
    x = keep('Mixed_7a', InceptionD(precision=p, name='Mixed_7a')(x))
    x = keep('Mixed_7b', FIDInceptionE('avg', precision=p, name='Mixed_7b')(x))
    x = keep('Mixed_7c', FIDInceptionE('max', precision=p, name='Mixed_7c')(x))
    pool3 = keep('pool3', jnp.mean(x, axis=(1, 2)))  # AdaptiveAvgPool2d((1, 1))

    if self.include_fc:
      blocks['logits'] = nn.Dense(NUM_CLASSES, precision=p, name='fc')(pool3)
    if return_blocks:
      return pool3, blocks
    return pool3


# ---------------------------------------------------------------------------
# Parameters on disk
# ---------------------------------------------------------------------------

_SEP = '/'


def _flatten(tree: Mapping[str, Any]) -> Dict[str, Any]:
  flat: Dict[str, Any] = {}

  def visit(prefix, node):
    if isinstance(node, Mapping):
      for k, v in node.items():
        visit(prefix + (str(k),), v)
    else:
      flat[_SEP.join(prefix)] = node

  visit((), tree)
  return flat


def flatten_params(params: Mapping[str, Any]) -> Dict[str, np.ndarray]:
  """Nested param dict -> {'Mixed_5b/branch1x1/conv/kernel': array}."""
  return {k: np.asarray(v) for k, v in _flatten(params).items()}


def unflatten_params(flat: Mapping[str, Any]) -> Dict[str, Any]:
  params: Dict[str, Any] = {}
  for key, value in flat.items():
    node = params
    *parents, leaf = key.split(_SEP)
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return params


@functools.lru_cache(maxsize=2)
def _expected_shapes(include_fc: bool) -> Dict[str, Tuple[int, ...]]:
  model = InceptionV3(preprocess=False, include_fc=include_fc)
  dummy = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), dummy)
  return {k: tuple(v.shape) for k, v in _flatten(variables['params']).items()}


def expected_param_shapes(include_fc: bool = True) -> Dict[str, Tuple[int, ...]]:
  """Flat name -> shape of every parameter of :class:`InceptionV3`."""
  return dict(_expected_shapes(bool(include_fc)))


def check_params(params: Mapping[str, Any], require_fc: bool = False) -> None:
  """Raise ValueError unless ``params`` has exactly InceptionV3's structure.

  The ``fc`` classifier is optional unless ``require_fc``.
  """
  flat = flatten_params(params)
  expected = expected_param_shapes(include_fc=True)
  fc_keys = {k for k in expected if k.startswith('fc' + _SEP)}
  required = set(expected) if require_fc else set(expected) - fc_keys
  missing = sorted(required - set(flat))
  unexpected = sorted(set(flat) - set(expected))
  wrong = sorted(
    f'{k}: {tuple(flat[k].shape)} != expected {expected[k]}'
    for k in set(flat) & set(expected)
    if tuple(flat[k].shape) != expected[k]
  )
  has_fc = [k for k in fc_keys if k in flat]
  if has_fc and len(has_fc) != len(fc_keys):
    missing += sorted(fc_keys - set(has_fc))
  if missing or unexpected or wrong:
    lines = ['Inception parameters do not match the FID InceptionV3 network:']
    if missing:
      lines.append(f'  missing ({len(missing)}): {missing[:8]}{" ..." if len(missing) > 8 else ""}')
    if unexpected:
      lines.append(
        f'  unexpected ({len(unexpected)}): {unexpected[:8]}{" ..." if len(unexpected) > 8 else ""}'
      )
    if wrong:
      lines.append(f'  wrong shape ({len(wrong)}): {wrong[:8]}{" ..." if len(wrong) > 8 else ""}')
    raise ValueError('\n'.join(lines))


def save_inception_params(params: Mapping[str, Any], path: Union[str, os.PathLike]) -> str:
  """Write params to an uncompressed .npz (flat '/'-joined names). Returns the path."""
  check_params(params)
  path = os.fspath(path)
  if not path.endswith('.npz'):
    raise ValueError(f'Inception params must be saved as .npz, got {path!r}')
  flat = {k: np.asarray(v, dtype=np.float32) for k, v in flatten_params(params).items()}
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
  tmp = path[: -len('.npz')] + '.tmp.npz'
  np.savez(tmp, **flat)
  os.replace(tmp, path)
  return path


def _missing_weights_message(path: str) -> str:
  return (
    f'FID Inception weights not found at {path!r}.\n'
    'They are not bundled with pga_jax and cannot be downloaded at run time. '
    'To create the file:\n'
    f"  1. on a machine with internet access, download pytorch-fid's weights "
    f'{FID_WEIGHTS_FILENAME} from\n     {FID_WEIGHTS_URL}\n'
    '  2. convert them (needs torch, only for this step):\n'
    '     python -m pga_jax.evaluation.convert_inception '
    f'--torch_weights=/path/to/{FID_WEIGHTS_FILENAME} --out={path}'
  )


def load_inception(path: Union[str, os.PathLike]) -> Dict[str, Any]:
  """Load converted FID Inception params (.npz written by convert_inception).

  Returns the ``params`` dict (to be used as ``{'params': params}`` with
  :class:`InceptionV3`, or passed as is to :func:`inception_features`).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(_missing_weights_message(path))
  if path.endswith(('.pth', '.pt')):
    raise ValueError(
      f'{path!r} looks like a torch state_dict; convert it first with\n'
      f'  python -m pga_jax.evaluation.convert_inception --torch_weights={path} '
      '--out=/path/to/fid_inception.npz'
    )
  try:
    with np.load(path, allow_pickle=False) as data:
      flat = {k: np.asarray(data[k], dtype=np.float32) for k in data.files}
  except Exception as e:  # not an npz / corrupt file
    raise ValueError(
      f'could not read FID Inception params from {path!r} ({e}); expected a .npz '
      'written by `python -m pga_jax.evaluation.convert_inception`'
    ) from e
  params = unflatten_params(flat)
  check_params(params)
  return jax.tree_util.tree_map(jnp.asarray, params)


# ---------------------------------------------------------------------------
# Feature extraction
# ---------------------------------------------------------------------------


def _unwrap(params: Mapping[str, Any]) -> Mapping[str, Any]:
  if set(params.keys()) == {'params'}:
    return params['params']
  return params


@jax.jit
def _preprocess_jit(images):
  return preprocess_images(images)


@functools.partial(jax.jit, static_argnames=('return_blocks', 'include_fc'))
def _network_jit(params, x, return_blocks=False, include_fc=False):
  model = InceptionV3(preprocess=False, include_fc=include_fc)
  if not include_fc:
    params = {k: v for k, v in params.items() if k != 'fc'}
  return model.apply({'params': params}, x, return_blocks=return_blocks)


def _as_batches(images, batch_size: int) -> Iterable[np.ndarray]:
  single_array = hasattr(images, 'shape')
  for chunk in [images] if single_array else images:
    chunk = np.asarray(chunk) if not isinstance(chunk, jax.Array) else chunk
    if single_array and chunk.ndim == 3:
      chunk = chunk[..., None]  # (N, H, W) grey
    if chunk.ndim != 4:
      # A 3-D element could be one HWC image or a batch of grey images:
      # refuse to guess.
      raise ValueError(
        'an iterable of images must yield (N, H, W, C) batches, got an element '
        f'of shape {tuple(chunk.shape)}'
      )
    for start in range(0, chunk.shape[0], batch_size):
      yield chunk[start : start + batch_size]


def inception_features(
  params: Mapping[str, Any], images: Union[Array, Iterable[Array]], batch_size: int = 50
) -> np.ndarray:
  """Pool3 features (N, 2048, float32) of images in [-1, 1].

  Args:
    params: from :func:`load_inception` (``{'params': ...}`` also accepted).
    images: (N, H, W, C) float array (C = 1 or 3, any H, W; (N, H, W) is
      read as grey), or an iterable of (N, H, W, C) arrays (e.g. a generator
      of sample batches).
    batch_size: images per jitted call. A last partial batch is padded, so
      only one network compilation per batch size is needed (a single array
      smaller than ``batch_size`` is run as one batch of its own size).
  """
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')
  params = _unwrap(params)
  if hasattr(images, 'shape') and 0 < images.shape[0] < batch_size:
    batch_size = images.shape[0]  # no padding work for a small single array
  outputs = []
  for batch in _as_batches(images, batch_size):
    m = batch.shape[0]
    if m == 0:
      continue
    _check_images(batch)
    x = _preprocess_jit(batch)  # cheap; compiled once per input shape
    if m < batch_size:
      x = jnp.pad(x, ((0, batch_size - m), (0, 0), (0, 0), (0, 0)))
    feats = _network_jit(params, x)
    outputs.append(np.asarray(feats[:m], dtype=np.float32))
  if not outputs:
    return np.zeros((0, FEATURE_DIM), np.float32)
  return np.concatenate(outputs, axis=0)


def inception_blocks(
  params: Mapping[str, Any], images: Array, include_fc: bool = False
) -> Dict[str, np.ndarray]:
  """All intermediate outputs (see ``BLOCK_NAMES``) for one batch, as numpy.

  Also contains ``'input'`` (the preprocessed 299x299 network input) and,
  with ``include_fc`` (params must contain ``fc``), ``'logits'``.
  """
  params = _unwrap(params)
  x = _preprocess_jit(images)
  _, blocks = _network_jit(params, x, return_blocks=True, include_fc=include_fc)
  out = {k: np.asarray(v) for k, v in blocks.items()}
  out['input'] = np.asarray(x)
  return out
