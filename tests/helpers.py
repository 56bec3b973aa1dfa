"""Small fixtures shared by the training tests: tiny configs and synthetic data."""

import numpy as np

from pga_jax import config as config_lib
from pga_jax.data import idx, synthetic


def write_idx_images(folder: str, images: np.ndarray, prefix: str = 'train') -> None:
  """Writes uint8 (N, 28, 28) images as an MNIST-format IDX file (gzipped)."""
  idx.write_uint8_split(folder, prefix, images, np.arange(len(images), dtype=np.uint8) % 10)


def synthetic_digits(n: int, seed: int = 0) -> np.ndarray:
  """uint8 (n, 28, 28) blob images (`pga_jax.data.synthetic.blob_images`)."""
  return synthetic.blob_images(n, (28, 28, 1), seed)[..., 0]


def tiny_config(data_dir: str, method: str = 'lpga', **overrides):
  """LPGA on synthetic IDX data: a few steps of conv_mnist at batch 8."""
  config = config_lib.base_config(method)
  config.dataset = 'idx'
  config.data_dir = data_dir
  config.batch_size = 8
  config.num_steps = 6
  config.init_steps = 2
  config.log_every = 2
  config.sample_every = 3
  config.checkpoint_every = 3
  for key, value in overrides.items():
    config[key] = value
  return config
