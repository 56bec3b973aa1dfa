"""Image grids as PNG: the paper's Figure 1 (samples) and Figure 2 (interpolations)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from pga_jax import storage
from pga_jax.data.pipeline import to_uint8


def grid(images: np.ndarray, rows: int, cols: int, pad: int = 2) -> np.ndarray:
  """(rows*cols, S, S, C) images in [-1, 1] -> one (H, W, C) uint8 grid, white gaps."""
  images = to_uint8(images)
  n, s, _, c = images.shape
  if n > rows * cols:
    raise ValueError(f'{n} images do not fit a {rows}x{cols} grid')
  canvas = np.full((rows * (s + pad) + pad, cols * (s + pad) + pad, c), 255, np.uint8)
  for i in range(n):
    r, col = divmod(i, cols)
    y, x = pad + r * (s + pad), pad + col * (s + pad)
    canvas[y : y + s, x : x + s] = images[i]
  return canvas


def png_bytes(array: np.ndarray, scale: int = 1) -> bytes:
  """An (H, W, C) uint8 image as PNG, each pixel `scale` x `scale`."""
  if array.shape[-1] == 1:
    array = array[..., 0]
  image = Image.fromarray(array)
  if scale > 1:
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
  encoded = io.BytesIO()
  image.save(encoded, format='PNG')
  return encoded.getvalue()


def save_png(array: np.ndarray, path: str, scale: int = 1) -> str:
  """Writes the PNG atomically to a local path or a gs:// URL; returns the path."""
  return storage.write_atomic(path, png_bytes(array, scale))


def sample_grid(samples: np.ndarray, rows: int = 10) -> np.ndarray:
  """Figure 1: random samples, `rows` x ceil(n/rows)."""
  cols = int(np.ceil(samples.shape[0] / rows))
  return grid(samples, rows, cols)


def reconstruction_grid(
  images: np.ndarray, reconstructions: np.ndarray, pairs_per_row: int = 5
) -> np.ndarray:
  """Inputs beside their reconstructions: columns alternate input, reconstruction."""
  n = images.shape[0]
  interleaved = np.stack([images, reconstructions], axis=1).reshape((2 * n,) + images.shape[1:])
  rows = int(np.ceil(n / pairs_per_row))
  return grid(interleaved, rows, 2 * pairs_per_row)


def interpolation_grid(images_a: np.ndarray, path: np.ndarray, images_b: np.ndarray) -> np.ndarray:
  """Figure 2: each row is a, the decoded path (N, steps, ...), b."""
  rows = np.concatenate([images_a[:, None], path, images_b[:, None]], axis=1)
  n, cols = rows.shape[:2]
  return grid(rows.reshape((n * cols,) + rows.shape[2:]), n, cols)
