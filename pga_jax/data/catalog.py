"""The datasets `load_split` knows, and the image shape each one returns.

The one table of dataset names and shapes: `pga_jax.config` (validation,
`image_shape`), `pga_jax.data.sources` and `pga_jax.data.tfds_sources` read
it. Imports nothing heavy (no TensorFlow, no Pillow).
"""

from __future__ import annotations

from typing import Optional, Tuple

# Datasets read through tfds -> (image_size, channels) of what load_split returns.
TFDS_SHAPES = {'mnist': (28, 1), 'fashion_mnist': (28, 1), 'cifar10': (32, 3), 'celeb_a': (64, 3)}
# Datasets read from files in data_dir; their shape is the config's.
FILE_DATASETS = ('folder', 'idx')
DATASETS = tuple(TFDS_SHAPES) + FILE_DATASETS


def check_dataset_name(dataset: str) -> None:
  """Raises ValueError naming the known datasets when `dataset` is not one."""
  if dataset not in DATASETS:
    raise ValueError(f'unknown dataset {dataset!r}; choose one of {DATASETS}')


def dataset_info(
  dataset: str, image_size: Optional[int] = None, channels: Optional[int] = None
) -> Tuple[int, int]:
  """(image_size, channels) of what `load_split(dataset, ...)` returns.

  For 'folder' and 'idx' the shape is the config's: pass its image_size and
  channels (both required for them).

  Raises:
    ValueError: unknown dataset, or 'folder'/'idx' without image_size and
      channels.
  """
  check_dataset_name(dataset)
  if dataset in TFDS_SHAPES:
    return TFDS_SHAPES[dataset]
  if image_size is None or channels is None:
    raise ValueError(
      f'dataset {dataset!r} takes its image size and channels from the '
      f'config; pass image_size and channels (got {image_size}, {channels}).'
    )
  return image_size, channels
