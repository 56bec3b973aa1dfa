"""What the evaluation's numbers say about known changes of real images.

Takes --num_images real test images and changes them in known ways: Gaussian
blur of a few widths, pixel noise, and a class mix away from the real one (the
images resampled by their labels so that the label mix lies at total variation
--class_tv from the real one). Each set is quantised to 8 bits, as samples are,
and evaluated as `pga evaluate` evaluates samples: domain FID, precision,
recall and KID against the train split, sharpness and the classifier's class
mix. This is the scale to read the studies' numbers on.

  python experiments/metric_cases.py --out=docs/metric_cases.md

Writes a markdown table (--out) and the same numbers as JSON beside it.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import app, flags
from scipy import ndimage

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import runner
from pga_jax.data import pipeline
from pga_jax.evaluation import evaluate
# pylint: enable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string('dataset', 'fashion_mnist', 'Dataset (tests use a small IDX one).')
flags.DEFINE_string('data_dir', None, 'Data directory for the dataset.')
flags.DEFINE_integer('num_images', 5000, 'Real test images per case.')
flags.DEFINE_list('blur', ['0.5', '1.0', '1.5'], 'Gaussian blur widths (pixels).')
flags.DEFINE_list('noise', ['0.1'], 'Pixel noise standard deviations (images in [-1, 1]).')
flags.DEFINE_float('class_tv', 0.1, 'Total variation of the shifted class mix.')
flags.DEFINE_integer('seed', 0, 'Seed of the noise, the resampling and the KID subsets.')
flags.DEFINE_string('out', 'docs/metric_cases.md', 'Output table (JSON beside it).')


def blurred(images: np.ndarray, sigma: float) -> np.ndarray:
  """Gaussian blur of each image's rows and columns; [-1, 1] in and out."""
  return ndimage.gaussian_filter(images, sigma=(0, sigma, sigma, 0), mode='nearest')


def noisy(images: np.ndarray, sigma: float, seed: int) -> np.ndarray:
  noise = np.random.RandomState(seed).normal(size=images.shape).astype(np.float32)
  return np.clip(images + sigma * noise, -1.0, 1.0)


def shifted_mix(labels: np.ndarray, tv: float, num: int, seed: int) -> np.ndarray:
  """Indices of `num` images drawn (with replacement) so that their label mix
  moves `tv` of mass from the second half of the classes to the first."""
  classes = np.unique(labels)
  real = np.array([np.mean(labels == c) for c in classes])
  half = len(classes) // 2
  target = real.copy()
  target[:half] += tv / half
  target[half : 2 * half] -= tv / half
  if np.any(target < 0):
    raise SystemExit(f'--class_tv={tv} is too large for this dataset; give a smaller one')
  rng = np.random.RandomState(seed)
  counts = rng.multinomial(num, target / target.sum())
  return np.concatenate(
    [rng.choice(np.flatnonzero(labels == c), n, replace=True) for c, n in zip(classes, counts)]
  )


def cases(images: np.ndarray, labels: np.ndarray, f) -> dict:
  """{case name: images in [-1, 1]} (before quantisation)."""
  out = {'real test images': images}
  for sigma in map(float, f.blur):
    out[f'blur sigma {sigma:g} px'] = blurred(images, sigma)
  for sigma in map(float, f.noise):
    out[f'noise sigma {sigma:g}'] = noisy(images, sigma, f.seed)
  index = shifted_mix(labels, f.class_tv, len(images), f.seed)
  out[f'class mix at TV {f.class_tv:g}'] = images[index]
  return out


COLUMNS = runner.METRIC_COLUMNS + (('class_confidence', 'confidence', '.3f'),)


def main(argv):
  del argv
  f = flags.FLAGS
  test = evaluate.load_split(f.dataset, 'test', f.data_dir, None, None)
  _, size, _, channels = test.images.shape
  evaluator = evaluate.build_evaluator(f.dataset, f.data_dir, size, channels, 'domain')
  images = pipeline.scale_images(test.images[: f.num_images])
  labels = np.asarray(test.labels[: f.num_images])
  results = {}
  for name, changed in cases(images, labels, f).items():
    r = evaluator.evaluate_images(evaluate.quantize(changed), f.seed)
    results[name] = {key: r[key] for key, _, _ in COLUMNS}
    print(name, ', '.join(f'{k} {v:.4g}' for k, v in results[name].items()), flush=True)
  rows = [[name] + [format(r[key], fmt) for key, _, fmt in COLUMNS] for name, r in results.items()]
  table = runner.markdown_table(rows, ['images'] + [title for _, title, _ in COLUMNS])
  runner.write_text(f.out, table)
  settings = {'dataset': f.dataset, 'num_images': f.num_images, 'seed': f.seed}
  runner.write_json_beside(f.out, {'cases': results, 'settings': settings})
  print(table)


if __name__ == '__main__':
  app.run(main)
