"""Sample-quality metrics on feature vectors: FID, precision/recall, KID.

Pure numpy functions of (N, D) feature arrays (real first, generated second):

* `fid`: the Frechet distance between Gaussians fitted to the two sets
  (`pga_jax.evaluation.frechet`); the real side may be given as (mu, sigma).
* `precision_recall`: Kynkaanniemi et al. 2019, "Improved Precision and Recall
  Metric for Assessing Generative Models". Each set approximates its manifold
  by the union of balls around its points, of radius the distance to the
  point's k-th nearest neighbour in its own set (k=3). Precision is the
  fraction of generated points inside the real manifold, recall the fraction
  of real points inside the generated one. A point is inside when its
  distance to some ball centre is <= that ball's radius.
* `kid`: Kernel Inception Distance (Binkowski et al. 2018), the unbiased
  estimator of the squared MMD with the cubic polynomial kernel
  k(x, y) = (x.y / d + 1)^3, averaged over random subsets (by default 100
  subsets of 1000, without replacement within a subset); returns the mean and
  the standard deviation over subsets.

Distances and kernels are computed in float64, in row blocks, so memory stays
bounded for tens of thousands of points.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np

from pga_jax.evaluation import frechet

K_NEAREST = 3
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
_BLOCK = 1024


def _as_features(x, name: str) -> np.ndarray:
  x = np.asarray(x, dtype=np.float64)
  if x.ndim != 2 or x.shape[0] == 0:
    raise ValueError(f'{name} must be a non-empty (N, D) array, got shape {x.shape}')
  if not np.all(np.isfinite(x)):
    raise ValueError(f'{name} contains non-finite values')
  return x


def fid(real: Union[np.ndarray, Tuple[np.ndarray, np.ndarray]], fake: np.ndarray) -> float:
  """Frechet distance of the features; `real` may be (N, D) features or (mu, sigma)."""
  if isinstance(real, tuple):
    mu_r, sigma_r = real
  else:
    mu_r, sigma_r = frechet.feature_statistics(_as_features(real, 'real'))
  mu_f, sigma_f = frechet.feature_statistics(_as_features(fake, 'fake'))
  return frechet.frechet_distance(mu_r, sigma_r, mu_f, sigma_f)


def _squared_norms(x: np.ndarray) -> np.ndarray:
  return np.einsum('ij,ij->i', x, x)


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """(len(a), len(b)) squared Euclidean distances, >= 0."""
  d = _squared_norms(a)[:, None] + _squared_norms(b)[None, :] - 2.0 * (a @ b.T)
  return np.maximum(d, 0.0)


def knn_radii(features: np.ndarray, k: int = K_NEAREST) -> np.ndarray:
  """Distance of each point to its k-th nearest neighbour in the set (itself excluded).

  As in the reference implementation, a point's own zero distance is the 0th
  neighbour, so duplicates of a point count as neighbours at distance 0.
  """
  x = _as_features(features, 'features')
  n = x.shape[0]
  if not 1 <= k < n:
    raise ValueError(f'k={k} needs more than k points, got {n}')
  radii = np.empty(n)
  for start in range(0, n, _BLOCK):
    d = squared_distances(x[start : start + _BLOCK], x)
    radii[start : start + _BLOCK] = np.partition(d, k, axis=1)[:, k]
  return np.sqrt(radii)


def coverage_fraction(centres: np.ndarray, radii: np.ndarray, points: np.ndarray) -> float:
  """Fraction of `points` within distance radii[i] of some centre i."""
  squared_radii = radii**2
  inside = 0
  for start in range(0, points.shape[0], _BLOCK):
    d = squared_distances(points[start : start + _BLOCK], centres)
    inside += int(np.count_nonzero(np.any(d <= squared_radii[None, :], axis=1)))
  return inside / points.shape[0]


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = K_NEAREST) -> Tuple[float, float]:
  """(precision, recall) of `fake` against `real` (Kynkaanniemi et al. 2019)."""
  real = _as_features(real, 'real')
  fake = _as_features(fake, 'fake')
  if real.shape[1] != fake.shape[1]:
    raise ValueError(f'feature sizes differ: real {real.shape[1]}, fake {fake.shape[1]}')
  precision = coverage_fraction(real, knn_radii(real, k), fake)
  recall = coverage_fraction(fake, knn_radii(fake, k), real)
  return precision, recall


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """k(x, y) = (x.y / d + 1)^3 for all pairs of rows."""
  d = x.shape[1]
  return (x @ y.T / d + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
  """Unbiased estimate of MMD^2(P, Q) from x ~ P (m, D) and y ~ Q (n, D), cubic kernel.

      sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (n(n-1))
      - 2 sum_{i,j} k(x_i, y_j) / (mn)

  Its expectation is exactly MMD^2; it can be negative.
  """
  x = _as_features(x, 'x')
  y = _as_features(y, 'y')
  m, n = x.shape[0], y.shape[0]
  if m < 2 or n < 2:
    raise ValueError(f'the unbiased MMD needs at least 2 points per set, got {m} and {n}')
  kxx = polynomial_kernel(x, x)
  kyy = polynomial_kernel(y, y)
  kxy = polynomial_kernel(x, y)
  return float(
    (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    - 2.0 * kxy.mean()
  )


def kid(
  real: np.ndarray,
  fake: np.ndarray,
  num_subsets: int = KID_SUBSETS,
  subset_size: int = KID_SUBSET_SIZE,
  seed: int = 0,
) -> Tuple[float, float]:
  """(mean, std) over `num_subsets` random subsets of the unbiased MMD^2 estimate.

  Each subset draws min(subset_size, N) rows of each set without replacement.
  """
  real = _as_features(real, 'real')
  fake = _as_features(fake, 'fake')
  if real.shape[1] != fake.shape[1]:
    raise ValueError(f'feature sizes differ: real {real.shape[1]}, fake {fake.shape[1]}')
  m = min(subset_size, real.shape[0], fake.shape[0])
  rng = np.random.default_rng(seed)
  values = np.array(
    [
      mmd2_unbiased(
        real[rng.choice(real.shape[0], m, replace=False)],
        fake[rng.choice(fake.shape[0], m, replace=False)],
      )
      for _ in range(num_subsets)
    ]
  )
  return float(values.mean()), float(values.std())


def all_metrics(
  real_features: np.ndarray,
  fake_features: np.ndarray,
  real_statistics: Optional[Tuple[np.ndarray, np.ndarray]] = None,
  k: int = K_NEAREST,
  kid_subsets: int = KID_SUBSETS,
  kid_subset_size: int = KID_SUBSET_SIZE,
  seed: int = 0,
) -> dict:
  """fid, precision, recall, kid, kid_std of fake against real features.

  FID uses `real_statistics` (mu, sigma) when given (e.g. of a whole split),
  else those of `real_features`. Precision and recall use equally many real
  and fake points (the first min(N_real, N_fake) of each), since both depend
  on the sample size through the k-NN radii.
  """
  real_features = _as_features(real_features, 'real_features')
  fake_features = _as_features(fake_features, 'fake_features')
  n = min(real_features.shape[0], fake_features.shape[0])
  precision, recall = precision_recall(real_features[:n], fake_features[:n], k)
  kid_mean, kid_std = kid(real_features, fake_features, kid_subsets, kid_subset_size, seed)
  return {
    'fid': fid(real_statistics if real_statistics is not None else real_features, fake_features),
    'precision': precision,
    'recall': recall,
    'kid': kid_mean,
    'kid_std': kid_std,
    'num_pr_points': n,
  }
