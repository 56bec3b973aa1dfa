"""What FID charges a run for: its class mix, each class's images, or images off the data.

FID compares the mean and covariance of the domain classifier's features of a
run's samples with those of the training images. This script splits that
number, for each run's checkpoint at --step and for real test images as the
baseline, using the same classifier's predicted labels for samples and real
images alike:

* mean / covariance: FID = |mu_r - mu_g|^2 + (the covariance part);
* class-balanced FID: the samples re-weighted so that their predicted class
  mix equals the real images' (weight p_real(c) / p_samples(c) per sample of
  class c). What FID drops by here is what the class mix costs;
* within-class FID of each class (samples of that class against training
  images of that class) and their mean weighted by the real mix: how good
  the images of each kind are, whatever the mix;
* per-class precision and recall (k = 3, equally many real and generated
  points of the class);
* the nearest training image of each sample in feature space: the median and
  90th percentile of that distance, over the same for real test images
  (1.0: as close to the training data as unseen real images are);
* the classifier's confidence (mean top-class probability, and the share of
  images below 0.5: blends of two kinds or no kind at all);
* per-image sharpness (Laplacian energy over the training images').

Grids (--out/anatomy_LABEL_*.png) show each run's samples sorted by each
measure: the 50 closest to the training data over the 50 farthest; the 50
most confident over the 50 least; and 10 random samples over their nearest
training images.

  python experiments/fid_anatomy.py --workroot=runs/study50k --step=10000 \\
      --methods=vae,lpga,vpga,lvpga --out=docs/study50k/anatomy

Writes anatomy.md (two tables) and anatomy.json in --out.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import runner
from pga_jax import checkpointing, figures, storage
from pga_jax.data import pipeline
from pga_jax.evaluation import class_mix as class_mix_lib
from pga_jax.evaluation import evaluate, fid_parts, frechet, metrics, sharpness
# pylint: enable=g-import-not-at-top,wrong-import-position

flags.DEFINE_list('workroot', ['runs/study50k'], 'Folders holding the runs (METHOD_sSEED).')
flags.DEFINE_list('methods', ['vae', 'lpga', 'vpga', 'lvpga'], 'Methods, in table order.')
flags.DEFINE_integer('step', None, 'Checkpoint step of every run (default: its newest).')
flags.DEFINE_integer('num_samples', 5000, 'Samples per run (and real test images).')
flags.DEFINE_integer('seed', 0, 'Seed of the sample latents (the evaluation uses 0).')
flags.DEFINE_integer('min_class_images', 50, 'Fewest images of a class for its own FID.')
flags.DEFINE_string('out', 'docs/study50k/anatomy', 'Output folder.')

REAL_LABEL = 'real test images'


class Reference:
  """The training images' features, predicted classes and statistics."""

  def __init__(self, evaluator: evaluate.Evaluator, train_images: np.ndarray, seed: int = 0):
    self.evaluator = evaluator
    self.images = train_images
    self.features = evaluator.features(pipeline.scale_images(train_images))
    self.classes = predicted_classes(evaluator, train_images)
    self.num_classes = evaluator.network.classify(pipeline.scale_images(train_images[:1])).shape[-1]
    self.mix = np.bincount(self.classes, minlength=self.num_classes) / len(self.classes)
    self.mu, self.sigma = frechet.feature_statistics(self.features)
    self.by_class = [np.flatnonzero(self.classes == c) for c in range(self.num_classes)]
    self.rng = np.random.RandomState(seed)


def predicted_classes(evaluator, images: np.ndarray, chunk: int = 1000) -> np.ndarray:
  return np.concatenate(
    [
      evaluator.network.classify(pipeline.scale_images(images[i : i + chunk])).argmax(-1)
      for i in range(0, len(images), chunk)
    ]
  )


def anatomy(reference: Reference, images: np.ndarray, min_class_images: int) -> dict:
  """The measures of the module docstring for uint8 (N, S, S, C) images."""
  ev = reference.evaluator
  scaled = pipeline.scale_images(images)
  features = ev.features(scaled)
  probabilities = np.concatenate(
    [ev.network.classify(scaled[i : i + 1000]) for i in range(0, len(scaled), 1000)]
  )
  classes = probabilities.argmax(-1)
  mix = np.bincount(classes, minlength=reference.num_classes) / len(classes)
  mu, sigma = frechet.feature_statistics(features)
  fid = frechet.frechet_distance(reference.mu, reference.sigma, mu, sigma)
  mean_term = float(np.sum((reference.mu - mu) ** 2))
  weights = reference.mix[classes] / np.maximum(mix[classes], 1e-12)
  balanced = frechet.frechet_distance(
    reference.mu, reference.sigma, *fid_parts.weighted_statistics(features, weights)
  )
  per_class = []
  for c in range(reference.num_classes):
    mine = np.flatnonzero(classes == c)
    row = {'fraction': float(mix[c]), 'real_fraction': float(reference.mix[c])}
    if len(mine) >= min_class_images:
      real_c = reference.features[reference.by_class[c]]
      row['fid'] = frechet.frechet_distance(
        *frechet.feature_statistics(real_c), *frechet.feature_statistics(features[mine])
      )
      n = min(len(mine), len(real_c), 2000)
      if n > 2 * metrics.K_NEAREST:
        real_pick = real_c[reference.rng.choice(len(real_c), n, replace=False)]
        fake_pick = features[mine[reference.rng.choice(len(mine), n, replace=False)]]
        row['precision'], row['recall'] = metrics.precision_recall(real_pick, fake_pick)
    per_class.append(row)
  measured = [r for r in per_class if 'fid' in r]
  within = sum(r['real_fraction'] * r['fid'] for r in measured) / sum(
    r['real_fraction'] for r in measured
  )
  dist, nearest = fid_parts.nearest_distances(features, reference.features)
  energy = np.array([sharpness.laplacian_energy(images[i : i + 1]) for i in range(len(images))])
  confidence = probabilities.max(-1)
  return {
    'fid': fid,
    'fid_mean_term': mean_term,
    'fid_covariance_term': fid - mean_term,
    'fid_class_balanced': balanced,
    'within_class_fid': within,
    'classes_measured': len(measured),
    'class_tv': class_mix_lib.total_variation(mix, reference.mix),
    'confidence': float(confidence.mean()),
    'low_confidence_share': float(np.mean(confidence < 0.5)),
    'nn_distance_median': float(np.median(dist)),
    'nn_distance_p90': float(np.percentile(dist, 90)),
    'sharpness_median': float(np.median(energy)) / ev.reference_energy,
    'per_class': per_class,
    # for the grids, not written to JSON
    '_distance': dist,
    '_nearest': nearest,
    '_confidence': confidence,
  }


def save_grids(reference: Reference, images: np.ndarray, result: dict, out: str, label: str):
  scaled = pipeline.scale_images(images)
  slug = label.replace('/', '_').replace(' ', '_')
  by_distance = np.argsort(result['_distance'])
  by_confidence = np.argsort(-result['_confidence'])
  for name, order in (('nn', by_distance), ('confidence', by_confidence)):
    picked = np.concatenate([order[:50], order[-50:]])
    figures.save_png(
      figures.grid(scaled[picked], 10, 10), os.path.join(out, f'anatomy_{slug}_{name}.png'), 2
    )
  random = np.random.RandomState(0).choice(len(images), 10, replace=False)
  pairs = np.concatenate(
    [scaled[random], pipeline.scale_images(reference.images[result['_nearest'][random]])]
  )
  figures.save_png(figures.grid(pairs, 2, 10), os.path.join(out, f'anatomy_{slug}_pairs.png'), 2)


def relative(results: dict) -> None:
  """Adds the nearest-neighbour distances over the real test images'."""
  real = results[REAL_LABEL]
  for r in results.values():
    r['nn_distance_ratio'] = r['nn_distance_median'] / real['nn_distance_median']
    r['nn_distance_p90_ratio'] = r['nn_distance_p90'] / real['nn_distance_p90']


SUMMARY = (
  ('fid', 'FID', '.3g'),
  ('fid_mean_term', 'mean part', '.3g'),
  ('fid_covariance_term', 'covariance part', '.3g'),
  ('fid_class_balanced', 'class-balanced FID', '.3g'),
  ('within_class_fid', 'within-class FID', '.3g'),
  ('class_tv', 'class-mix TV', '.3f'),
  ('confidence', 'confidence', '.3f'),
  ('low_confidence_share', 'confidence < 0.5', '.3f'),
  ('nn_distance_ratio', 'NN distance (median, / real)', '.3f'),
  ('nn_distance_p90_ratio', 'NN distance (p90, / real)', '.3f'),
  ('sharpness_median', 'sharpness (median image)', '.3f'),
)


def tables(results: dict, class_names) -> str:
  rows = [[label] + [format(r[k], fmt) for k, _, fmt in SUMMARY] for label, r in results.items()]
  text = runner.markdown_table(rows, ['images'] + [title for _, title, _ in SUMMARY])
  header = ['class', 'real %']
  for label in results:
    header += [f'{label} %', f'{label} FID', f'{label} P/R']
  rows = []
  for c, name in enumerate(class_names):
    first = next(iter(results.values()))['per_class'][c]
    row = [name, f'{100 * first["real_fraction"]:.1f}']
    for r in results.values():
      cell = r['per_class'][c]
      row.append(f'{100 * cell["fraction"]:.1f}')
      row.append(f'{cell["fid"]:.3g}' if 'fid' in cell else '')
      row.append(f'{cell["precision"]:.2f}/{cell["recall"]:.2f}' if 'recall' in cell else '')
    rows.append(row)
  return text + '\n' + runner.markdown_table(rows, header)


def main(argv):
  del argv
  f = flags.FLAGS
  runs = runner.find_runs_or_exit('fid_anatomy', f.workroot, f.methods)
  first = checkpointing.load_config(next(iter(runs.values())))
  evaluator = evaluate.evaluator_for_config(first, 'domain')
  train = evaluate.load_split(first.dataset, 'train', first.data_dir, None, None)
  test = evaluate.load_split(first.dataset, 'test', first.data_dir, None, None)
  reference = Reference(evaluator, train.images, f.seed)
  os.makedirs(f.out, exist_ok=True)
  sets = {REAL_LABEL: (None, test.images[: f.num_samples])}
  for label, workdir in runs.items():
    config, model, params, step = checkpointing.load_trained(workdir, f.step)
    chunks = evaluate.quantized_samples(model, params, config, f.num_samples, f.seed)
    sets[f'{label} @{step}'] = (step, pipeline.to_uint8(np.concatenate(list(chunks))))
  results = {}
  for label, (_, images) in sets.items():
    results[label] = anatomy(reference, images, f.min_class_images)
    save_grids(reference, images, results[label], f.out, label)
    print(label, ', '.join(f'{k} {results[label][k]:.4g}' for k, _, _ in SUMMARY[:5]), flush=True)
  relative(results)
  names = class_mix_lib.CLASS_NAMES.get(first.dataset, ())
  if len(names) != reference.num_classes:
    names = [f'class {c}' for c in range(reference.num_classes)]
  text = tables(results, names)
  runner.write_text(os.path.join(f.out, 'anatomy.md'), text)
  public = {
    label: {k: v for k, v in r.items() if not k.startswith('_')} for label, r in results.items()
  }
  storage.write_json(os.path.join(f.out, 'anatomy.json'), public, indent=1)
  print(text)


if __name__ == '__main__':
  app.run(main)
