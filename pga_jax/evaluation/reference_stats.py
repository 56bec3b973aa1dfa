"""Statistics of a real split's features, cached per dataset and feature network.

A reference holds the mean and covariance of the features of a whole split
(for FID) and the features of a fixed random subset of it (for precision,
recall and KID, which need points, not moments).

The cache file is `<cache>/reference_stats/<dataset>-<split>-<kind>-<key>.npz`,
`key` a hash of everything the numbers depend on: the dataset name and split,
a fingerprint of the split's pixels, the feature network's identity (a hash of
the classifier's parameters, or of the Inception weights file), the subset
size and seed and the file format. Another network or other data give another
key, so a stale file is never read; the key is also stored inside the file and
checked on load. Files are written to a temporary name and renamed, so
concurrent writers and interrupted runs never leave a partial file behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from typing import Callable, Optional

import numpy as np
from absl import logging

from pga_jax.data.pipeline import scale_images
from pga_jax.evaluation import frechet

FORMAT_VERSION = 1
DEFAULT_SUBSET_SIZE = 10000
SUBSET_SEED = 0


@dataclasses.dataclass
class ReferenceStats:
  mu: np.ndarray  # (D,) mean of the split's features
  sigma: np.ndarray  # (D, D) covariance
  features: np.ndarray  # (M, D) features of a random subset, in random order
  meta: dict  # what the key hashes, plus num_images, path, seconds


def cache_key(meta: dict) -> str:
  return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def cache_path(cache_dir: str, meta: dict) -> str:
  name = f'{meta["dataset"]}-{meta["split"]}-{meta["network_kind"]}-{cache_key(meta)[:16]}.npz'
  return os.path.join(cache_dir, 'reference_stats', name.replace('/', '_'))


def _load(path: str, key: str) -> Optional[ReferenceStats]:
  try:
    with np.load(path, allow_pickle=False) as f:
      meta = json.loads(str(f['meta']))
      if meta.get('key') != key:
        logging.warning(
          'reference stats: %s has key %s, expected %s; recomputing.', path, meta.get('key'), key
        )
        return None
      meta['path'] = path
      return ReferenceStats(f['mu'], f['sigma'], f['features'], meta)
  except FileNotFoundError:
    return None
  except Exception as err:  # pylint: disable=broad-except  # corrupt file: recompute
    logging.warning('reference stats: cannot read %s (%s); recomputing.', path, err)
    return None


def _save_atomic(path: str, stats: ReferenceStats) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(
    prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=os.path.dirname(path)
  )
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(
        f,
        mu=stats.mu,
        sigma=stats.sigma,
        features=stats.features,
        meta=np.array(json.dumps(stats.meta, sort_keys=True)),
      )
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def reference_statistics(
  images: np.ndarray,
  feature_fn: Callable[[np.ndarray], np.ndarray],
  *,
  dataset: str,
  split: str,
  network_kind: str,
  network_id: str,
  cache_dir: Optional[str],
  data_fingerprint: Optional[str] = None,
  subset_size: int = DEFAULT_SUBSET_SIZE,
  chunk: int = 5000,
) -> ReferenceStats:
  """Cached (mu, sigma, subset features) of `feature_fn` over uint8 `images`.

  feature_fn: images in [-1, 1] (float32, (n, S, S, C)) -> (n, D) features.
  cache_dir: None disables the cache.
  """
  from pga_jax.evaluation import classifier  # pylint: disable=g-import-not-at-top

  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4:
    raise ValueError(f'images must be uint8 (N, S, S, C), got {images.dtype} {images.shape}')
  if data_fingerprint is None:
    data_fingerprint = classifier.fingerprint(images)
  meta = {
    'format': FORMAT_VERSION,
    'dataset': dataset,
    'split': split,
    'data_fingerprint': data_fingerprint,
    'network_kind': network_kind,
    'network_id': network_id,
    'subset_size': int(subset_size),
    'subset_seed': SUBSET_SEED,
  }
  key = cache_key(meta)
  path = cache_path(cache_dir, meta) if cache_dir else None
  if path:
    cached = _load(path, key)
    if cached is not None:
      logging.info(
        'reference stats: using cached %s (%d images of %s %s)',
        path,
        cached.meta['num_images'],
        dataset,
        split,
      )
      return cached
  logging.info(
    'reference stats: computing %s features of %d images of %s %s',
    network_kind,
    len(images),
    dataset,
    split,
  )
  start = time.time()
  features = []
  for i in range(0, len(images), chunk):
    batch = scale_images(images[i : i + chunk])
    features.append(np.asarray(feature_fn(batch), np.float32))
  features = np.concatenate(features)
  mu, sigma = frechet.feature_statistics(features)
  # A random subset in random order: its first n rows are a random subset too.
  subset = features[np.random.default_rng(SUBSET_SEED).permutation(len(images))[:subset_size]]
  stats = ReferenceStats(
    mu,
    sigma,
    subset,
    dict(meta, key=key, num_images=int(len(images)), seconds=round(time.time() - start, 1)),
  )
  if path:
    _save_atomic(path, stats)
    stats.meta['path'] = path
    logging.info('reference stats: wrote %s (%.0f s)', path, stats.meta['seconds'])
  return stats
