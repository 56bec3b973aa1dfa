"""Datasets read through tensorflow-datasets: mnist, fashion_mnist, cifar10, celeb_a.

Each is prepared in data_dir by tfds (downloaded when possible; fashion_mnist
is built from local files when they exist, see `fashion_mnist_offline`), then
read whole into memory as uint8 (N, S, S, C) with its integer labels when the
dataset has them. Only CelebA is transformed (center crop and resize, as in
the reference implementation).
"""

from __future__ import annotations

import socket
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

# tf.data only feeds numpy to JAX: keep TensorFlow off any GPU so it does not
# reserve the memory JAX needs.
tf.config.set_visible_devices([], 'GPU')

from pga_jax import storage
from pga_jax.data import fashion_mnist_offline, tfds_quiet
from pga_jax.data.errors import DatasetError
from pga_jax.data.catalog import TFDS_SHAPES

# The 178x218 aligned CelebA images (height 218, width 178): center crop
# 108x108 at offsets ((218-108)//2, (178-108)//2), bicubic resize to 64x64.
CELEB_A_HEIGHT, CELEB_A_WIDTH = 218, 178
CELEB_A_CROP = 108
CELEB_A_OFFSETS = ((CELEB_A_HEIGHT - CELEB_A_CROP) // 2, (CELEB_A_WIDTH - CELEB_A_CROP) // 2)
CELEB_A_SIZE = 64


class TfdsSpec(NamedTuple):
  """How one dataset is read: its tfds name, the key of its labels, where tfds downloads it."""

  tfds_name: str
  label_key: Optional[str]
  download_host: str


# Output shapes are in `sources.TFDS_SHAPES`. Download hosts: the URLs in tfds's builders.
TFDS_DATASETS: Dict[str, TfdsSpec] = {
  'mnist': TfdsSpec('mnist', 'label', 'storage.googleapis.com'),
  'fashion_mnist': TfdsSpec(
    'fashion_mnist', 'label', 'fashion-mnist.s3-website.eu-central-1.amazonaws.com'
  ),
  'cifar10': TfdsSpec('cifar10', 'label', 'www.cs.toronto.edu'),
  'celeb_a': TfdsSpec('celeb_a', None, 'drive.google.com'),  # 40 attributes, no class label
}
_CONNECT_TIMEOUT = 10.0  # seconds


def _unreachable(host: str) -> Optional[str]:
  """None if a connection to host:443 opens, else why not (one line)."""
  try:
    socket.create_connection((host, 443), timeout=_CONNECT_TIMEOUT).close()
  except OSError as err:
    return f'{type(err).__name__}: {err.strerror or err}'
  return None


_READ_BATCH = 1024


def celeb_a_crop_resize_tf(images: tf.Tensor) -> tf.Tensor:
  """CelebA preprocessing in TF: uint8 (..., 218, 178, 3) -> uint8 (..., 64, 64, 3).

  Crop 108x108 at rows 55:163, columns 35:143, then `tf.image.resize` with
  method='bicubic' (TF2: half-pixel centers, Keys kernel a=-0.5, no
  antialiasing), clipped to [0, 255] and rounded. Deviation note: the
  reference ran TF1, whose `resize_bicubic` defaulted to no half-pixel
  centers (and a=-0.75); if it resized that way, its pixels differ from these
  by a sub-pixel shift.
  """
  top, left = CELEB_A_OFFSETS
  crop = images[..., top : top + CELEB_A_CROP, left : left + CELEB_A_CROP, :]
  resized = tf.image.resize(
    tf.cast(crop, tf.float32), (CELEB_A_SIZE, CELEB_A_SIZE), method='bicubic'
  )
  return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)


def celeb_a_crop_resize(images: np.ndarray) -> np.ndarray:
  """Numpy front end of `celeb_a_crop_resize_tf` for (N, 218, 178, 3) or one image."""
  images = np.asarray(images)
  if images.shape[-3:] != (CELEB_A_HEIGHT, CELEB_A_WIDTH, 3):
    raise ValueError(
      f'CelebA images must be (..., {CELEB_A_HEIGHT}, {CELEB_A_WIDTH}, 3) '
      f'(the aligned 178x218 images), got {images.shape}'
    )
  return celeb_a_crop_resize_tf(tf.constant(images, tf.uint8)).numpy()


def _preprocess_fn(dataset: str) -> Callable[[tf.Tensor], tf.Tensor]:
  """The per-image transform of `dataset` (identity except for CelebA)."""
  return celeb_a_crop_resize_tf if dataset == 'celeb_a' else tf.identity


def missing_data_message(dataset: str, where: str, cause: str) -> str:
  """The message of the error raised when a tfds dataset is not available."""
  name = TFDS_DATASETS[dataset].tfds_name
  message = (
    f'dataset {dataset!r} is not prepared in {where} and tfds could not get '
    f'it: {cause}. To get it, run once on a machine with internet access '
    f"(tfds downloads and prepares it into data_dir), then copy its '{name}' "
    'folder into data_dir here.'
  )
  if dataset == 'fashion_mnist':
    message += (
      ' No local Fashion-MNIST files were found in '
      f'{fashion_mnist_offline.local_files_dir()} either. ' + fashion_mnist_offline.HOW_TO_GET
    )
  if dataset == 'mnist':
    message += (
      " MNIST's IDX files can also be read directly with dataset "
      "'idx' (data_dir = the folder holding them)."
    )
  return message


def _download_and_prepare(builder, dataset: str, allow_download: bool) -> None:
  """Runs tfds's own download_and_prepare, turning failures into DatasetError."""
  if not allow_download:
    raise DatasetError(missing_data_message(dataset, builder.data_dir, 'downloading is disabled'))
  host = TFDS_DATASETS[dataset].download_host
  unreachable = _unreachable(host)
  if unreachable:  # fail now rather than after tfds's retries (minutes)
    raise DatasetError(
      missing_data_message(
        dataset, builder.data_dir, f'cannot reach its download server {host} ({unreachable})'
      )
    )
  try:
    with tfds_quiet.quiet_build(dataset, builder.data_dir):
      builder.download_and_prepare()
  except Exception as e:  # network, checksum, missing module, ...
    cause = f'{type(e).__name__}: {e}'
    if isinstance(e, ModuleNotFoundError) and e.name:
      cause += f' (tfds needs the Python module {e.name!r} to download; `pip install {e.name}`)'
    raise DatasetError(missing_data_message(dataset, builder.data_dir, cause)) from e


def prepare(dataset: str, data_dir: Optional[str], allow_download: bool = True):
  """Returns a tfds builder for `dataset` whose data is prepared in data_dir.

  fashion_mnist is built from local files (Debian's package, or
  $PGA_FASHION_MNIST_DIR) when they exist, before any download is tried:
  same data, no network.

  Raises:
    DatasetError: the data is not there and cannot be obtained.
  """
  name = TFDS_DATASETS[dataset].tfds_name
  builder = tfds.builder(name, data_dir=data_dir)
  if builder.is_prepared():
    return builder
  if dataset == 'fashion_mnist':
    local_dir = fashion_mnist_offline.local_files_dir()
    if fashion_mnist_offline.has_local_files(local_dir):
      fashion_mnist_offline.build_from_local_files(data_dir, local_dir)
      return tfds.builder(name, data_dir=data_dir)
  _download_and_prepare(builder, dataset, allow_download)
  return builder


def read_split(builder, dataset: str, split: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
  """Reads a prepared split into memory: (uint8 images, int64 labels or None).

  Raises:
    DatasetError: the prepared files cannot be read or hold fewer or more
      examples than tfds recorded (a damaged cache).
  """
  spec = TFDS_DATASETS[dataset]
  preprocess = _preprocess_fn(dataset)
  label_key = spec.label_key

  def to_pair(example):
    label = example[label_key] if label_key else tf.constant(-1, tf.int64)
    return preprocess(example['image']), tf.cast(label, tf.int64)

  try:
    ds = builder.as_dataset(split=split, shuffle_files=False)
  except ValueError as e:  # an unknown split name or a malformed slice
    raise DatasetError(
      f'dataset {dataset!r}: unknown split {split!r}; choose one of '
      f"{sorted(builder.info.splits)} (or a slice such as 'train[:10%]')"
    ) from e
  ds = ds.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(_READ_BATCH).prefetch(2)
  images, labels = [], []
  try:
    for image_batch, label_batch in tfds.as_numpy(ds):
      images.append(image_batch)
      labels.append(label_batch)
  except tf.errors.OpError as e:
    raise DatasetError(
      f'dataset {dataset!r}: cannot read split {split!r} from '
      f'{builder.data_dir} ({type(e).__name__}: {e.message}). The prepared '
      'files are damaged: delete that folder and run again.'
    ) from e
  size, channels = TFDS_SHAPES[dataset]
  image_array = _concatenate(images, (0, size, size, channels), np.uint8)
  _check_count(builder, dataset, split, len(image_array))
  label_array = _concatenate(labels, (0,), np.int64) if label_key else None
  return image_array, label_array


def _concatenate(parts, empty_shape, dtype) -> np.ndarray:
  """Concatenates batches, or an empty array of `empty_shape` if none."""
  return np.concatenate(parts) if parts else np.zeros(empty_shape, dtype)


def _check_count(builder, dataset: str, split: str, count: int) -> None:
  """Compares the number of examples read with what tfds recorded, if known."""
  try:
    expected = builder.info.splits[split].num_examples
  except (KeyError, ValueError):
    return  # unknown split bookkeeping (e.g. mocked datasets)
  if expected and expected != count:
    raise DatasetError(
      f'dataset {dataset!r}: read {count} examples of split {split!r} from '
      f'{builder.data_dir} but tfds recorded {expected}. The prepared files '
      'are damaged: delete that folder and run again.'
    )


def load_tfds_split(
  dataset: str, split: str, data_dir: Optional[str], allow_download: bool = True
) -> Tuple[np.ndarray, Optional[np.ndarray]]:
  """Prepares (if needed) and reads one split of a tfds dataset."""
  if data_dir and storage.is_remote(data_dir):
    return _load_remote_split(dataset, split, data_dir)
  builder = prepare(dataset, data_dir, allow_download)
  return read_split(builder, dataset, split)


def _load_remote_split(
  dataset: str, split: str, data_dir: str
) -> Tuple[np.ndarray, Optional[np.ndarray]]:
  """Reads a split of a dataset prepared in a gs:// data_dir.

  tf.data would read gs:// through TensorFlow's GCS filesystem, which cannot
  be pointed at an emulator (see `pga_jax.storage`); the dataset's folder is
  copied to a local temporary directory instead (the split is read whole
  into memory anyway) and deleted after reading. It must be prepared
  already: tfds does not prepare into gs:// here.
  """
  name = TFDS_DATASETS[dataset].tfds_name
  with storage.local_copy(data_dir, name) as local_dir:
    builder = tfds.builder(name, data_dir=local_dir)
    if not builder.is_prepared():
      raise DatasetError(
        f'dataset {dataset!r} is not prepared in {data_dir}: prepare it in a local '
        f'data_dir first (any `pga` command with --config.data_dir=DIR), then copy '
        f'DIR/{name} to {storage.join(data_dir, name)} (`gcloud storage cp -r`).'
      )
    return read_split(builder, dataset, split)
