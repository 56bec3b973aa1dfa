"""Data input: raw splits in memory (`load_split`) and batches (`BatchSource`).

TensorFlow / tensorflow-datasets are imported only when a tfds dataset is
loaded.
"""

from pga_jax.data.errors import DatasetError
from pga_jax.data.pipeline import BatchSource, scale_images, to_uint8
from pga_jax.data.sources import DATASETS, Split, dataset_info, load_split

__all__ = [
  'BatchSource',
  'DATASETS',
  'DatasetError',
  'Split',
  'dataset_info',
  'load_split',
  'scale_images',
  'to_uint8',
]
