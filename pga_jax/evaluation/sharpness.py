"""Sharpness of images: their Laplacian energy relative to real images'.

The paper's claim for PGA is sharper samples than a VAE's. Blur removes high
spatial frequencies, and the discrete Laplacian (the 5-point stencil
[[0, 1, 0], [1, -4, 1], [0, 1, 0]], applied to each channel of each image
without padding) keeps mostly those. Its mean square over all pixels is the
Laplacian energy of a set of images; `sharpness` divides the energy of
generated images by that of real ones:

* 1.0: as much fine detail as the real images;
* below 1: blurrier (a Gaussian blur lowers the energy at every width, since
  it damps every frequency the Laplacian passes);
* above 1: more high-frequency content than the data (pixel noise, textures
  real images do not have). So "sharper" means closer to 1.0 from below, and
  a value above 1 is not better.

Images are (N, S, S, C) in [-1, 1] (or uint8, scaled to [-1, 1] first).
Sums are accumulated in float64 chunk by chunk, so a whole training split
(or a stream of sample chunks) is summarised without holding it in memory.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np

from pga_jax.data.pipeline import scale_images

_CHUNK = 2000


def _as_float_images(images) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f'images must be (N, S, S, C), got shape {images.shape}')
  if min(images.shape[1:3]) < 3:
    raise ValueError(f'the Laplacian needs images of at least 3x3 pixels, got {images.shape}')
  if images.dtype == np.uint8:
    images = scale_images(images)
  return images.astype(np.float64)


def laplacian(images) -> np.ndarray:
  """The 5-point Laplacian of each channel, (N, S-2, S-2, C), no padding."""
  x = _as_float_images(images)
  centre = x[:, 1:-1, 1:-1]
  return x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:] - 4.0 * centre


@dataclasses.dataclass
class EnergySum:
  """A running sum of squared Laplacian values and how many there were."""

  total: float = 0.0
  count: int = 0

  def add(self, images) -> 'EnergySum':
    for start in range(0, len(images), _CHUNK):
      lap = laplacian(images[start : start + _CHUNK])
      self.total += float(np.sum(lap * lap))
      self.count += lap.size
    return self

  @property
  def energy(self) -> float:
    if not self.count:
      raise ValueError('no images were added')
    return self.total / self.count


def laplacian_energy(images) -> float:
  """Mean squared Laplacian over every pixel, channel and image."""
  return EnergySum().add(images).energy


def laplacian_energy_of_chunks(chunks: Iterable) -> float:
  """`laplacian_energy` of the concatenation of `chunks`, one chunk at a time."""
  acc = EnergySum()
  for chunk in chunks:
    acc.add(chunk)
  return acc.energy


def sharpness(images, reference_energy: float) -> float:
  """Laplacian energy of `images` over `reference_energy` (real images'): 1.0 = as sharp."""
  if not reference_energy > 0:
    raise ValueError(f'reference_energy must be > 0, got {reference_energy}')
  return laplacian_energy(images) / reference_energy
