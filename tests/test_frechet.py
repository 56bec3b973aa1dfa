"""Frechet distance against pytorch-fid and closed forms.

Needs the test-only dependencies in requirements-test.txt (torch CPU,
torchvision, pytorch-fid); `tests.torch_reference` checks they are installed
when this file is collected, so a missing install makes it ERROR instead of
being skipped, and imports them at first use.
"""

import numpy as np
import pytest


from tests.torch_reference import Deferred  # noqa: E402  (errors when torch is missing)

fid_score = Deferred('pytorch_fid.fid_score')

from pga_jax.evaluation.frechet import (  # noqa: E402
  feature_statistics,
  frechet_distance,
  trace_sqrt_product,
)


def relu_features(n, d, seed, shift=0.0):
  """Non-negative, correlated 'features' (like pool3 activations after ReLU)."""
  rng = np.random.default_rng(seed)
  mix = np.random.default_rng(1234).standard_normal((d, d)) / np.sqrt(d)
  return np.maximum(rng.standard_normal((n, d)) @ mix + shift, 0.0)


def random_spd(d, seed, scale=1.0):
  rng = np.random.default_rng(seed)
  a = rng.standard_normal((d, 2 * d))
  return scale * (a @ a.T) / (2 * d) + 0.1 * np.eye(d)


@pytest.mark.parametrize(
  'n,d,shift',
  [
    (1000, 64, 0.0),  # same distribution: small FID, large traces
    (1000, 64, 0.3),
    (3000, 512, 0.0),
    (3000, 512, 0.2),
    (300, 256, 0.1),  # fewer samples than dims: singular covariances
  ],
)
def test_matches_pytorch_fid(n, d, shift):
  m1, s1 = feature_statistics(relu_features(n, d, seed=1))
  m2, s2 = feature_statistics(relu_features(n, d, seed=2, shift=shift))
  ref = fid_score.calculate_frechet_distance(m1, s1, m2, s2)
  ours = frechet_distance(m1, s1, m2, s2)
  assert isinstance(ours, float)
  assert ours == pytest.approx(float(ref), rel=1e-6)


def test_float32_statistics_are_computed_in_float64():
  m1, s1 = feature_statistics(relu_features(500, 32, seed=3))
  m2, s2 = feature_statistics(relu_features(500, 32, seed=4, shift=0.5))
  stats32 = [a.astype(np.float32) for a in (m1, s1, m2, s2)]
  # pytorch-fid would work in float32 here; we upcast, so compare with its
  # result on the same (float32-rounded) values given as float64.
  ref = fid_score.calculate_frechet_distance(*(a.astype(np.float64) for a in stats32))
  assert frechet_distance(*stats32) == pytest.approx(float(ref), rel=1e-10)


def test_diagonal_closed_form():
  # For diagonal covariances: ||mu1-mu2||^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
  rng = np.random.default_rng(0)
  d = 100
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  a = rng.uniform(0.01, 4.0, size=d)
  b = rng.uniform(0.01, 4.0, size=d)
  expected = 0.0
  for i in range(d):  # deliberately elementwise and independent of the implementation
    expected += (mu1[i] - mu2[i]) ** 2 + (a[i] ** 0.5 - b[i] ** 0.5) ** 2
  got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
  assert got == pytest.approx(expected, rel=1e-10)


def test_commuting_covariances_closed_form():
  # Same eigenvectors: reduces to the diagonal case in a rotated basis.
  rng = np.random.default_rng(1)
  d = 50
  q, _ = np.linalg.qr(rng.normal(size=(d, d)))
  a = rng.uniform(0.0, 2.0, size=d)
  b = rng.uniform(0.0, 2.0, size=d)
  expected = float(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
  got = frechet_distance(np.zeros(d), q @ np.diag(a) @ q.T, np.zeros(d), q @ np.diag(b) @ q.T)
  assert got == pytest.approx(expected, rel=1e-8, abs=1e-10)


def test_one_dimensional():
  # Scalars are accepted like in pytorch-fid: (m1-m2)^2 + (s1^.5 - s2^.5)^2.
  assert frechet_distance(1.0, 4.0, -2.0, 9.0) == pytest.approx(9.0 + 1.0, rel=1e-12)


def test_zero_for_identical_statistics():
  m, s = feature_statistics(relu_features(2000, 128, seed=5))
  assert abs(frechet_distance(m, s, m, s)) < 1e-9 * np.trace(s)
  # Also for a rank-deficient covariance (fewer samples than dims).
  m, s = feature_statistics(relu_features(50, 128, seed=6))
  assert abs(frechet_distance(m, s, m, s)) < 1e-6 * np.trace(s)


def test_symmetric():
  s1, s2 = random_spd(80, 1), random_spd(80, 2, scale=3.0)
  mu1 = np.random.default_rng(3).normal(size=80)
  mu2 = np.random.default_rng(4).normal(size=80)
  d12 = frechet_distance(mu1, s1, mu2, s2)
  d21 = frechet_distance(mu2, s2, mu1, s1)
  assert d12 > 0
  assert d12 == pytest.approx(d21, rel=1e-10)


def test_near_singular_covariance_stays_finite_and_accurate():
  rng = np.random.default_rng(7)
  d = 64
  q, _ = np.linalg.qr(rng.normal(size=(d, d)))
  # Eigenvalues spanning 1 .. 1e-14, plus exact zeros (rank deficient).
  a = np.concatenate([np.logspace(0, -14, d - 8), np.zeros(8)])
  b = np.concatenate([np.zeros(8), np.logspace(-14, 0, d - 8)])
  s1 = q @ np.diag(a) @ q.T
  s2 = q @ np.diag(b) @ q.T
  got = frechet_distance(np.zeros(d), s1, np.ones(d), s2)
  expected = d + float(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
  assert np.isfinite(got)
  assert got == pytest.approx(expected, rel=1e-6)

  # Non-commuting, both singular (rank 10 in 64 dims): finite, >= 0.
  u = rng.normal(size=(d, 10))
  v = rng.normal(size=(d, 10))
  s1, s2 = u @ u.T, v @ v.T
  got = frechet_distance(np.zeros(d), s1, np.zeros(d), s2)
  assert np.isfinite(got) and got > -1e-8 * (np.trace(s1) + np.trace(s2))
  assert frechet_distance(np.zeros(d), s1, np.zeros(d), s1) == pytest.approx(0.0, abs=1e-6)


def test_trace_sqrt_product_matches_eigenvalues_of_product():
  s1, s2 = random_spd(30, 10), random_spd(30, 11)
  expected = float(np.sum(np.sqrt(np.linalg.eigvals(s1 @ s2).real)))
  assert trace_sqrt_product(s1, s2) == pytest.approx(expected, rel=1e-10)


def test_feature_statistics_matches_numpy():
  x = np.random.default_rng(8).normal(size=(200, 16)).astype(np.float32)
  mu, sigma = feature_statistics(x)
  assert mu.dtype == np.float64 and sigma.dtype == np.float64
  np.testing.assert_allclose(mu, np.mean(x.astype(np.float64), axis=0), rtol=1e-12)
  np.testing.assert_allclose(
    sigma, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-10, atol=1e-14
  )
  with pytest.raises(ValueError):
    feature_statistics(x[:1])
  with pytest.raises(ValueError):
    feature_statistics(x[0])


def test_shape_mismatch_is_rejected():
  with pytest.raises(ValueError):
    frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
  with pytest.raises(ValueError):
    frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
  with pytest.raises(ValueError):
    frechet_distance(np.zeros(3), np.eye(3) * np.nan, np.zeros(3), np.eye(3))
