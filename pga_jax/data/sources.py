"""Entry point for raw data: `load_split` and `dataset_info`.

Datasets:
- 'mnist', 'fashion_mnist', 'cifar10', 'celeb_a': through tensorflow-datasets,
  prepared in data_dir (fashion_mnist can be built offline from Debian's
  `dataset-fashion-mnist` files). CelebA is center-cropped and resized to 64.
- 'folder': data_dir is a folder of images of any size (recursively), cropped
  to a square and resized to image_size.
- 'idx': data_dir holds MNIST-format IDX files (train-/t10k-, .gz or plain).

Everything is returned in memory as uint8 (N, S, S, C); the batch pipeline
(`pga_jax.data.pipeline`) scales to [-1, 1].

Importing this module needs neither TensorFlow nor Pillow: tfds and the
folder reader are imported when their datasets are loaded.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from pga_jax import console, storage
from pga_jax.data import idx as idx_lib

# The dataset table lives in `catalog` (tfds_sources reads it too); re-exported here.
from pga_jax.data.catalog import DATASETS, FILE_DATASETS, TFDS_SHAPES, dataset_info  # noqa: F401
from pga_jax.data.catalog import check_dataset_name as _check_dataset_name
from pga_jax.data.errors import DatasetError


class Split(NamedTuple):
  """One split in memory.

  images: uint8 (N, S, S, C).
  labels: int64 (N,), or None when the dataset has no labels.
  num_skipped: files skipped as unreadable ('folder' with skip_bad_files).
  """

  images: np.ndarray
  labels: Optional[np.ndarray]
  num_skipped: int = 0


def _check_requested_shape(
  dataset: str, size: int, count: int, image_size: Optional[int], channels: Optional[int]
) -> None:
  """Fails if the caller asked for a size or channel count the data lacks."""
  if image_size is not None and image_size != size:
    raise DatasetError(
      f'dataset {dataset!r} has {size}x{size} images but image_size='
      f'{image_size} was requested. Set image_size to {size}.'
    )
  if channels is not None and channels != count:
    raise DatasetError(
      f'dataset {dataset!r} has {count}-channel images but channels='
      f'{channels} was requested. Set channels to {count}.'
    )


def _require_data_dir(dataset: str, data_dir: Optional[str]) -> str:
  if not data_dir:
    raise DatasetError(
      f'dataset {dataset!r} reads files from data_dir, but data_dir is not '
      'set. Set it to the folder holding the data.'
    )
  try:
    found = storage.isdir(data_dir)
  except storage.StorageError as err:
    raise DatasetError(
      f'dataset {dataset!r}: cannot read data_dir {data_dir} ({err}); '
      'check the path, your credentials and the network.'
    ) from err
  if not found:
    raise DatasetError(
      f'dataset {dataset!r}: data_dir {data_dir!r} does not exist or is not a directory.'
    )
  return data_dir


def _load_idx(split: str, data_dir: str) -> Split:
  loaded = idx_lib.load_idx_split(data_dir, split)
  height, width = loaded.images.shape[1:]
  if height != width:
    raise DatasetError(
      f"dataset 'idx': the images in {data_dir!r} are {height}x{width}; "
      'only square images are supported.'
    )
  return Split(loaded.images[..., None], loaded.labels)


def _load_folder(
  split: str,
  data_dir: str,
  image_size: Optional[int],
  channels: Optional[int],
  skip_bad_files: bool,
) -> Split:
  if image_size is None:
    raise ValueError(
      "dataset 'folder' needs image_size (its images are cropped and resized to it)."
    )
  # Imported here: the folder reader needs Pillow, which the rest of the
  # core (models, train step, `pga benchmark`) does not import.
  from pga_jax.data import folder as folder_lib  # pylint: disable=g-import-not-at-top

  directory = folder_lib.resolve_split_folder(data_dir, split)
  loaded = folder_lib.load_folder(directory, image_size, channels, skip_bad_files)
  return Split(loaded.images, None, len(loaded.skipped))


def load_split(
  dataset: str,
  split: str,
  data_dir: Optional[str],
  image_size: Optional[int] = None,
  channels: Optional[int] = None,
  skip_bad_files: bool = False,
  *,
  allow_download: bool = True,
) -> Split:
  """Loads one split of `dataset` into memory as uint8 (N, S, S, C).

  Args:
    dataset: 'mnist', 'fashion_mnist', 'cifar10', 'celeb_a', 'folder' or 'idx'.
    split: 'train', 'test' (tfds datasets also accept their other splits and
      slices such as 'train[:10%]'; 'folder' uses data_dir/<split> if present).
    data_dir: tfds data directory (None: tfds's default), or the folder of
      files for 'folder' and 'idx'.
    image_size: output side; required for 'folder'; for the other datasets
      only checked against the data.
    channels: 1 or 3; checked against the data ('folder': every image must
      have it; None: taken from the first image).
    skip_bad_files: 'folder' only: skip unreadable files instead of failing;
      their count is logged and returned as `num_skipped`.
    allow_download: whether tfds may try to download missing data.

  Raises:
    DatasetError: data missing, unreadable, or not matching image_size /
      channels. The message says what is wrong, where it looked, and how to
      get the data.
    ValueError: unknown dataset, or a required option missing.
  """
  _check_dataset_name(dataset)
  try:  # a gs:// data_dir that cannot be read: one DatasetError
    if dataset == 'folder':
      result = _load_folder(
        split, _require_data_dir(dataset, data_dir), image_size, channels, skip_bad_files
      )
    elif dataset == 'idx':
      result = _load_idx(split, _require_data_dir(dataset, data_dir))
    else:
      _check_requested_shape(
        dataset, *TFDS_SHAPES[dataset], image_size, channels
      )  # before loading anything
      # Imported here: TensorFlow is only needed for the tfds datasets. Its
      # native start-up lines go to the `pga` command's log file.
      with console.native_stderr_to(console.routed_log_file()):
        from pga_jax.data import tfds_sources  # pylint: disable=g-import-not-at-top

      images, labels = tfds_sources.load_tfds_split(dataset, split, data_dir, allow_download)
      result = Split(images, labels)
  except storage.StorageError as err:
    raise DatasetError(
      f'dataset {dataset!r}: cannot read from data_dir {data_dir} ({err}); '
      'check the path, your credentials and the network.'
    ) from err
  _check_requested_shape(
    dataset, result.images.shape[1], result.images.shape[3], image_size, channels
  )
  return result
