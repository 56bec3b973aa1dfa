"""Synthetic images for benchmarks, the accelerator check and tests."""

from __future__ import annotations

import numpy as np


def blob_images(num: int, shape: tuple, seed: int = 0) -> np.ndarray:
  """uint8 (num, S, S, C) images of three smooth blobs each (shape = (S, S, C)):
  structured enough to train on (unlike pure noise, which diverges at a large
  learning rate), cheap to make, the same for a given seed."""
  size, _, channels = shape
  rs = np.random.RandomState(seed)
  yy, xx = np.mgrid[:size, :size].astype(np.float32)
  out = np.zeros((num, size, size, channels), np.float32)
  for i in range(num):
    for _ in range(3):
      cy, cx = rs.uniform(0.2, 0.8, 2) * size
      r = rs.uniform(0.07, 0.18) * size
      blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
      out[i] += blob[..., None] * rs.uniform(0.3, 1.0, channels)
  return np.clip(out * 255, 0, 255).astype(np.uint8)
