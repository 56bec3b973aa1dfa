"""The class mix of generated images under a classifier, against the real images'.

FID compares feature means and covariances, and precision/recall compare
k-nearest-neighbour supports; neither shows a model drawing some kinds of
images too often and others too rarely. `class_mix` summarises the classifier's
predicted probabilities for a set of images; `total_variation` compares two
mixes (0: the same, 1: disjoint classes). `experiments/class_balance.py` uses
them on study runs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# Names of the classes of the datasets whose labels are not their names.
CLASS_NAMES = {
  'fashion_mnist': (
    'T-shirt/top',
    'Trouser',
    'Pullover',
    'Dress',
    'Coat',
    'Sandal',
    'Shirt',
    'Sneaker',
    'Bag',
    'Ankle boot',
  )
}


def class_mix(probabilities: np.ndarray) -> dict:
  """{fractions: share of each predicted (argmax) class, confidence: mean top-class probability}.

  `probabilities` is [num_images, num_classes], each row summing to 1.
  """
  counts = np.bincount(probabilities.argmax(-1), minlength=probabilities.shape[-1])
  return {
    'fractions': (counts / counts.sum()).tolist(),
    'confidence': float(probabilities.max(-1).mean()),
  }


def total_variation(p: Sequence[float], q: Sequence[float]) -> float:
  """0.5 * sum |p - q| of two class mixes."""
  return 0.5 * float(np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).sum())
