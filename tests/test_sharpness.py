"""Sharpness (Laplacian energy over real images'): the stencil, real images, blur, noise.

The Laplacian is checked against scipy.ndimage.laplace on the interior; the
statistic against its defining properties on real Fashion-MNIST images
(1.0 on the reference images themselves, about 1 on other real images,
falling monotonically with Gaussian blur, above 1 with pixel noise).
"""

import numpy as np
import pytest
from scipy import ndimage

from pga_jax import data
from pga_jax.data import fashion_mnist_offline, pipeline
from pga_jax.evaluation import evaluate, sharpness


def test_laplacian_is_scipys_on_the_interior():
  images = np.random.RandomState(0).uniform(-1, 1, size=(3, 9, 7, 2))
  ours = sharpness.laplacian(images)
  assert ours.shape == (3, 7, 5, 2)
  for n in range(3):
    for c in range(2):
      expected = ndimage.laplace(images[n, :, :, c].astype(np.float64))[1:-1, 1:-1]
      np.testing.assert_allclose(ours[n, :, :, c], expected, rtol=1e-12, atol=1e-12)


def test_energy_of_chunks_equals_energy_of_the_whole():
  images = np.random.RandomState(1).randint(0, 256, size=(50, 10, 10, 1), dtype=np.uint8)
  whole = sharpness.laplacian_energy(images)
  chunks = sharpness.laplacian_energy_of_chunks([images[:7], images[7:30], images[30:]])
  assert chunks == pytest.approx(whole, rel=1e-12)
  # uint8 pixels are scaled to [-1, 1] first, as the pipeline does.
  assert whole == pytest.approx(sharpness.laplacian_energy(pipeline.scale_images(images)))


def test_bad_images_are_refused_with_their_shape():
  with pytest.raises(ValueError, match=r'\(N, S, S, C\)'):
    sharpness.laplacian(np.zeros((4, 4)))
  with pytest.raises(ValueError, match='3x3'):
    sharpness.laplacian(np.zeros((1, 2, 8, 1)))
  with pytest.raises(ValueError, match='reference_energy'):
    sharpness.sharpness(np.zeros((1, 4, 4, 1)), 0.0)


@pytest.fixture(scope='module')
def fashion():
  directory = fashion_mnist_offline.local_files_dir()
  train = data.load_split('idx', 'train', directory).images[:10000]
  test = data.load_split('idx', 'test', directory).images[:5000]
  return train, test


def blurred(images_uint8, sigma):
  x = pipeline.scale_images(images_uint8)
  return evaluate.quantize(ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode='nearest'))


def test_one_on_real_images_and_monotone_in_blur(fashion):
  train, test = fashion
  reference = sharpness.laplacian_energy(train)
  assert sharpness.sharpness(train, reference) == pytest.approx(1.0, rel=1e-12)
  unblurred = sharpness.sharpness(test, reference)
  assert unblurred == pytest.approx(1.0, abs=0.05)
  sigmas = [0.4, 0.5, 0.75, 1.0, 1.5, 2.0]
  values = [unblurred] + [sharpness.sharpness(blurred(test, s), reference) for s in sigmas]
  assert all(a > b for a, b in zip(values, values[1:])), values
  assert values[2] < 0.6 and values[-1] < 0.1, values


def test_pixel_noise_raises_it_above_one(fashion):
  train, test = fashion
  reference = sharpness.laplacian_energy(train)
  x = pipeline.scale_images(test)
  noise = np.random.RandomState(0).normal(size=x.shape).astype(np.float32)
  values = [
    sharpness.sharpness(evaluate.quantize(np.clip(x + s * noise, -1, 1)), reference)
    for s in (0.05, 0.1, 0.2)
  ]
  assert 1.0 < values[0] < values[1] < values[2], values
