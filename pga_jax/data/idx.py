"""Reader (and a small writer) for MNIST-format IDX files (plain or gzip), in numpy.

The IDX format: a 4-byte magic number (two zero bytes, a type code, the
number of dimensions), one big-endian uint32 per dimension, then the data in
row-major order. See http://yann.lecun.com/exdb/mnist/.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from typing import NamedTuple, Optional

import numpy as np

from pga_jax import storage
from pga_jax.data.errors import DatasetError

# IDX type code -> numpy dtype (big-endian, as the format stores it).
_IDX_DTYPES = {
  0x08: np.dtype('u1'),
  0x09: np.dtype('i1'),
  0x0B: np.dtype('>i2'),
  0x0C: np.dtype('>i4'),
  0x0D: np.dtype('>f4'),
  0x0E: np.dtype('>f8'),
}

# MNIST's split names -> file name prefixes.
SPLIT_PREFIXES = {'train': 'train', 'test': 't10k'}
IMAGES_SUFFIX = '-images-idx3-ubyte'
LABELS_SUFFIX = '-labels-idx1-ubyte'


def gunzip(raw: bytes, source: str) -> bytes:
  """Decompresses gzip bytes read from the file `source`.

  Raises:
    DatasetError: if `raw` is not a complete, valid gzip stream (gzip checks
      the CRC and length of the content).
  """
  try:
    return gzip.decompress(raw)
  except (OSError, EOFError, zlib.error) as e:
    raise DatasetError(
      f'{source} is not a valid gzip file ({type(e).__name__}: {e}); it is '
      'probably truncated or corrupt. Replace it with a good copy.'
    ) from e


def read_file_bytes(path: str) -> bytes:
  """Returns the content of `path` (local or gs://), gunzipped if its name ends in `.gz`."""
  raw = storage.read_bytes(path)
  return gunzip(raw, path) if path.endswith('.gz') else raw


def parse_idx(data: bytes, source: str = '<bytes>') -> np.ndarray:
  """Parses the bytes of an IDX file into a numpy array in native byte order.

  Args:
    data: the whole (uncompressed) file content.
    source: name of the file, used in error messages.

  Raises:
    DatasetError: bad magic number, unknown type code, or a data size that
      does not match the header.
  """
  if len(data) < 4:
    raise DatasetError(f'{source}: not an IDX file (only {len(data)} bytes).')
  zero0, zero1, type_code, ndim = data[0], data[1], data[2], data[3]
  magic = int.from_bytes(data[:4], 'big')
  if zero0 != 0 or zero1 != 0 or type_code not in _IDX_DTYPES or ndim == 0:
    raise DatasetError(
      f'{source}: bad IDX magic number 0x{magic:08x}; expected 0x0000TTDD '
      '(TT a type code such as 08 for uint8, DD the number of dimensions), '
      'e.g. 0x00000803 for MNIST images, 0x00000801 for labels.'
    )
  header_size = 4 + 4 * ndim
  if len(data) < header_size:
    raise DatasetError(f'{source}: IDX header truncated.')
  shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], 'big') for i in range(ndim))
  dtype = _IDX_DTYPES[type_code]
  expected = int(np.prod(shape)) * dtype.itemsize
  actual = len(data) - header_size
  if actual != expected:
    raise DatasetError(
      f'{source}: IDX header says shape {shape} ({expected} data bytes) but '
      f'the file holds {actual} data bytes; the file is truncated or corrupt.'
    )
  array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
  return array.astype(dtype.newbyteorder('='), copy=False)


def read_idx(path: str) -> np.ndarray:
  """Reads one IDX file (`.gz` or plain) into a numpy array."""
  return parse_idx(read_file_bytes(path), source=path)


def find_idx_file(directory: str, stem: str) -> Optional[str]:
  """Returns `directory/stem` or `directory/stem.gz`, whichever exists."""
  for name in (stem, stem + '.gz'):
    path = storage.join(directory, name)
    if storage.isfile(path):
      return path
  return None


class IdxSplit(NamedTuple):
  """Images (N, H, W) and labels (N,) or None, as stored in the files."""

  images: np.ndarray
  labels: Optional[np.ndarray]


def load_idx_split(directory: str, split: str) -> IdxSplit:
  """Loads `<prefix>-images-idx3-ubyte[.gz]` (+ labels if present) of a split.

  Raises:
    DatasetError: unknown split, missing image file, bad files, or image and
      label counts that differ.
  """
  if split not in SPLIT_PREFIXES:
    raise DatasetError(
      f"dataset 'idx': unknown split {split!r}; IDX files come in splits "
      f'{sorted(SPLIT_PREFIXES)} (file prefixes train- and t10k-).'
    )
  prefix = SPLIT_PREFIXES[split]
  images_stem = prefix + IMAGES_SUFFIX
  images_path = find_idx_file(directory, images_stem)
  if images_path is None:
    raise DatasetError(
      f"dataset 'idx': no {images_stem} or {images_stem}.gz in {directory!r}."
      f' Put MNIST-format files there: {prefix}{IMAGES_SUFFIX}[.gz] and '
      f'(optional) {prefix}{LABELS_SUFFIX}[.gz].'
    )
  images = read_idx(images_path)
  if images.ndim != 3 or images.dtype != np.uint8:
    raise DatasetError(
      f'{images_path}: expected uint8 images of shape (N, H, W), got '
      f'{images.dtype} of shape {images.shape}.'
    )
  labels_path = find_idx_file(directory, prefix + LABELS_SUFFIX)
  labels = None
  if labels_path is not None:
    labels = read_idx(labels_path)
    if labels.ndim != 1 or len(labels) != len(images):
      raise DatasetError(
        f'{labels_path}: expected {len(images)} labels (one per image in '
        f'{images_path}), got an array of shape {labels.shape}.'
      )
    labels = labels.astype(np.int64)
  return IdxSplit(images, labels)


def write_uint8_split(directory: str, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
  """Writes uint8 images (N, rows, cols) and labels (N,) as gzipped IDX files
  `{prefix}-images-idx3-ubyte.gz` and `{prefix}-labels-idx1-ubyte.gz`."""
  images, labels = np.asarray(images, np.uint8), np.asarray(labels, np.uint8)
  if images.ndim != 3 or labels.shape != images.shape[:1]:
    raise ValueError(
      f'expected images (N, rows, cols) and labels (N,), got {images.shape} and {labels.shape}'
    )
  os.makedirs(directory, exist_ok=True)
  n, rows, cols = images.shape
  with gzip.open(os.path.join(directory, f'{prefix}{IMAGES_SUFFIX}.gz'), 'wb') as f:
    f.write(struct.pack('>IIII', 0x00000803, n, rows, cols) + images.tobytes())
  with gzip.open(os.path.join(directory, f'{prefix}{LABELS_SUFFIX}.gz'), 'wb') as f:
    f.write(struct.pack('>II', 0x00000801, n) + labels.tobytes())
