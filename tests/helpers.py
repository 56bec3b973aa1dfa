"""Small fixtures shared by the training tests: tiny configs and synthetic data."""
import os

import numpy as np

from pga_jax import config as config_lib
from pga_jax.data import idx


def write_idx_images(folder: str, images: np.ndarray, prefix: str = 'train') -> None:
  """Writes uint8 (N, 28, 28) images as an MNIST-format IDX file (gzipped)."""
  idx.write_uint8_split(folder, prefix, images, np.arange(len(images), dtype=np.uint8) % 10)


def synthetic_digits(n: int, seed: int = 0) -> np.ndarray:
  """Blurry random blobs: structured enough to train on, cheap to make."""
  rs = np.random.RandomState(seed)
  yy, xx = np.mgrid[:28, :28]
  images = np.zeros((n, 28, 28))
  for i in range(n):
    for _ in range(3):
      cy, cx, r = rs.uniform(6, 22), rs.uniform(6, 22), rs.uniform(2, 5)
      images[i] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
  return np.clip(images * 255, 0, 255).astype(np.uint8)


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
