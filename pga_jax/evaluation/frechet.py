"""Frechet distance between Gaussians fitted to feature sets (the FID formula).

    d^2 = ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^{1/2})

``Tr((S1 S2)^{1/2})`` is computed without a general (non-symmetric) matrix
square root: S1 S2 is similar to the symmetric PSD matrix
``A = S1^{1/2} S2 S1^{1/2} = M^T M`` with ``M = S2^{1/2} S1^{1/2}``, so the
trace is the sum of the square roots of A's eigenvalues, i.e. the sum of the
singular values of ``M`` (its nuclear norm). The symmetric square roots come
from ``eigh`` (round-off negative eigenvalues clipped to 0) and the singular
values from an SVD, all in float64, so the result stays real and finite for
singular or nearly singular covariances (e.g. fewer samples than feature
dimensions), where ``scipy.linalg.sqrtm`` may return complex values or NaNs.
Taking singular values of ``M`` instead of square roots of A's eigenvalues
avoids amplifying round-off in A's (near-)zero eigenvalues. For
well-conditioned covariances the result agrees with pytorch-fid's
``calculate_frechet_distance``.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

__all__ = ['feature_statistics', 'frechet_distance', 'trace_sqrt_product']


def _sym_psd_sqrt(sigma: np.ndarray) -> np.ndarray:
  """Square root of a symmetric PSD matrix (negative round-off eigenvalues -> 0)."""
  evals, evecs = np.linalg.eigh(sigma)
  evals = np.clip(evals, 0.0, None)
  return (evecs * np.sqrt(evals)) @ evecs.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
  """Tr((sigma1 @ sigma2)^{1/2}) for symmetric PSD sigma1, sigma2 (float64)."""
  s1 = np.asarray(sigma1, dtype=np.float64)
  s2 = np.asarray(sigma2, dtype=np.float64)
  s1 = 0.5 * (s1 + s1.T)
  s2 = 0.5 * (s2 + s2.T)
  m = _sym_psd_sqrt(s2) @ _sym_psd_sqrt(s1)
  return float(np.linalg.svd(m, compute_uv=False).sum())


def frechet_distance(
  mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
  """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

  ``mu*`` are (D,) means and ``sigma*`` (D, D) covariance matrices (as from
  :func:`feature_statistics`). Returns a Python float (>= 0 up to round-off).
  """
  mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
  mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
  if mu1.ndim != 1 or mu1.shape != mu2.shape:
    raise ValueError(f'means must be vectors of equal length, got {mu1.shape} and {mu2.shape}')
  d = mu1.shape[0]
  if sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(f'covariances must be ({d}, {d}), got {sigma1.shape} and {sigma2.shape}')
  for name, arr in (('mu1', mu1), ('mu2', mu2), ('sigma1', sigma1), ('sigma2', sigma2)):
    if not np.all(np.isfinite(arr)):
      raise ValueError(f'{name} contains non-finite values')
  diff = mu1 - mu2
  tr_covmean = trace_sqrt_product(sigma1, sigma2)
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def feature_statistics(features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Mean (D,) and unbiased covariance (D, D) of (N, D) features, in float64.

  Same as pytorch-fid / TTUR: ``np.mean(x, 0)`` and ``np.cov(x, rowvar=False)``.
  """
  x = np.asarray(features, dtype=np.float64)
  if x.ndim != 2:
    raise ValueError(f'features must be (N, D), got shape {x.shape}')
  n = x.shape[0]
  if n < 2:
    raise ValueError(f'need at least 2 feature vectors for a covariance, got {n}')
  mu = x.mean(axis=0)
  xc = x - mu
  sigma = (xc.T @ xc) / (n - 1)
  return mu, sigma
