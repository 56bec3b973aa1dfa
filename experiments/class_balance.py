"""What kinds of images a run draws: the class mix and confidence of its samples.

FID compares the mean and covariance of features; precision and recall
(k-nearest-neighbour supports) cannot see a model that draws some kinds of
images too often and others too rarely, nor how clearly each sample is one
kind. This script classifies a run's samples with the domain classifier the
evaluation's features come from (trained on the dataset's labels) and
compares them with the real test images classified by the same network:

  python experiments/class_balance.py --workroot=runs/study10k --methods=vae,lpga,vpga,lvpga \\
      --num_samples=5000 --out=docs/study/class_balance.json

Per run (its newest checkpoint, or --step): the fraction of samples in each
predicted class; the total variation distance between that mix and the real
images' (0: the same mix, 1: disjoint classes); and the mean top-class
probability, how confidently a sample is one kind of image (blends of two
kinds score low). The samples are the evaluation's (the same latents, from
--seed, quantized to 8 bits). Writes a JSON and prints a table.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from scipy import special
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import runner
from pga_jax import checkpointing, config as config_lib, storage
from pga_jax.evaluation import class_mix as class_mix_lib, classifier as classifier_lib, evaluate
# pylint: enable=g-import-not-at-top,wrong-import-position

flags.DEFINE_list('workroot', ['runs/study10k'], 'Folders holding the runs (METHOD_sSEED).')
flags.DEFINE_list('methods', ['vae', 'lpga', 'vpga', 'lvpga'], 'Methods, in table order.')
flags.DEFINE_integer('num_samples', 5000, 'Samples per run.')
flags.DEFINE_integer('seed', 0, 'Seed of the sample latents (the evaluation uses 0).')
flags.DEFINE_integer('step', None, 'Checkpoint step of every run (default: its newest).')
flags.DEFINE_string('out', 'docs/study/class_balance.json', 'Output JSON.')


def domain_classifier(config) -> classifier_lib.TrainedClassifier:
  """The classifier behind the run's domain features (trained first if missing)."""
  evaluator = evaluate.evaluator_for_config(config, 'domain')
  return classifier_lib.load(evaluator.network.info['directory'])


def run_mix(workdir: str, classifier, num_samples: int, seed: int, step=None) -> dict:
  config, model, params, step = checkpointing.load_trained(workdir, step)
  logits = [
    classifier.logits(images)
    for images in evaluate.quantized_samples(model, params, config, num_samples, seed)
  ]
  return dict(
    class_mix_lib.class_mix(special.softmax(np.concatenate(logits), axis=-1)), step=int(step)
  )


def real_mix(config, classifier) -> dict:
  size, _, channels = config_lib.image_shape(config)
  test = evaluate.load_split(config.dataset, 'test', config.data_dir, size, channels)
  return class_mix_lib.class_mix(special.softmax(classifier.logits(test.images), axis=-1))


def table(results: dict) -> str:
  real = results['real']
  classes = len(real['fractions'])
  names = class_mix_lib.CLASS_NAMES.get(results['dataset'], ())
  names = names if len(names) == classes else [f'class {c}' for c in range(classes)]
  rows = [['real (test)', '', '0', f'{real["confidence"]:.3f}'] + _percent(real['fractions'])]
  for name, r in results['runs'].items():
    rows.append(
      [name, str(r['step']), f'{r["total_variation"]:.3f}', f'{r["confidence"]:.3f}']
      + _percent(r['fractions'])
    )
  header = ['run', 'step', 'TV to real', 'confidence'] + [f'{name} %' for name in names]
  return runner.markdown_table(rows, header)


def _percent(fractions):
  return [f'{100 * f:.1f}' for f in fractions]


def main(argv):
  del argv
  f = flags.FLAGS
  runs = runner.find_runs_or_exit('class_balance', f.workroot, f.methods)
  first = checkpointing.load_config(next(iter(runs.values())))
  classifier = domain_classifier(first)
  results = {
    'dataset': first.dataset,
    'real': real_mix(first, classifier),
    'num_samples': f.num_samples,
    'runs': {},
  }
  for name, workdir in runs.items():
    config = checkpointing.load_config(workdir)
    if (config.dataset, config.data_dir) != (first.dataset, first.data_dir):
      raise SystemExit(
        f'class_balance: {workdir} trained on {config.dataset!r}, the first run on '
        f'{first.dataset!r}; give runs of one dataset'
      )
    r = run_mix(workdir, classifier, f.num_samples, f.seed, f.step)
    r['total_variation'] = class_mix_lib.total_variation(
      r['fractions'], results['real']['fractions']
    )
    results['runs'][name] = r
  storage.write_json(f.out, results, indent=1)
  print(table(results))


if __name__ == '__main__':
  app.run(main)
