"""Small fixtures shared by the training tests: tiny configs and synthetic data."""
import gzip
import os
import struct

import numpy as np

from pga_jax import config as config_lib


def write_idx_images(folder: str, images: np.ndarray, prefix: str = 'train') -> None:
  """Writes uint8 (N, 28, 28) images as an MNIST-format IDX file (gzipped)."""
  os.makedirs(folder, exist_ok=True)
  n, rows, cols = images.shape
  header = struct.pack('>IIII', 0x00000803, n, rows, cols)
  with gzip.open(os.path.join(folder, f'{prefix}-images-idx3-ubyte.gz'), 'wb') as f:
    f.write(header + images.astype(np.uint8).tobytes())
  labels = np.arange(n, dtype=np.uint8) % 10
  with gzip.open(os.path.join(folder, f'{prefix}-labels-idx1-ubyte.gz'), 'wb') as f:
    f.write(struct.pack('>II', 0x00000801, n) + labels.tobytes())


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
