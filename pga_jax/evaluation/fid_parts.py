"""Pieces for taking FID apart: weighted feature statistics and nearest neighbours.

`experiments/fid_anatomy.py` uses them to split a run's FID into what its
class mix costs and what its images of each class cost, and to find each
sample's nearest training image in feature space.
"""

from __future__ import annotations

import numpy as np

from pga_jax.evaluation import metrics


def weighted_statistics(features: np.ndarray, weights: np.ndarray):
  """Weighted mean and covariance (reliability weights: numpy's `cov(aweights=)`,
  the usual unbiased covariance for equal weights)."""
  w = np.asarray(weights, np.float64) / np.sum(weights)
  x = np.asarray(features, np.float64)
  mu = w @ x
  xc = x - mu
  sigma = (xc * w[:, None]).T @ xc / (1.0 - np.sum(w * w))
  return mu, sigma


def nearest_distances(points: np.ndarray, centres: np.ndarray, block: int = 256):
  """(distance, index) of each point's nearest centre, in float64, `block` points at a time."""
  points = np.asarray(points, np.float64)
  centres = np.asarray(centres, np.float64)
  dist = np.empty(len(points))
  index = np.empty(len(points), np.int64)
  for start in range(0, len(points), block):
    d = metrics.squared_distances(points[start : start + block], centres)
    index[start : start + block] = d.argmin(1)
    dist[start : start + block] = np.sqrt(d.min(1))
  return dist, index
