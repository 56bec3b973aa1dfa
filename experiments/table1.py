"""The paper's Table 1: FID of LPGA, VPGA and VAE on MNIST, CIFAR-10 and CelebA.

Trains each (method, dataset, seed) with the reference's settings
(`experiments/configs/DATASET_METHOD.py`), evaluates FID with the Inception
network on 5,000 samples, and writes a markdown table of mean ± std:

  python experiments/table1.py --inception_weights=pt_inception.npz --seeds=0,1,2 \
      --workroot=runs/table1 --out=docs/table1.md

Needs the datasets (tfds downloads them) and the converted Inception weights
(`python -m pga_jax.evaluation.convert_inception`). Runs resume from their
checkpoints. On a machine without them, `--features=domain` and small
`--num_steps` run the same path end to end (as the test does).
"""

from __future__ import annotations

import importlib.util
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import runner  # pylint: disable=g-import-not-at-top,wrong-import-position
from pga_jax import storage  # pylint: disable=g-import-not-at-top,wrong-import-position
from pga_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top,wrong-import-position

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')
PAPER_FID = {  # Table 1 of the paper, for the side-by-side column
  ('lpga', 'mnist'): '12.06 ± 0.12',
  ('lpga', 'cifar10'): '55.87 ± 0.25',
  ('lpga', 'celeba'): '14.53 ± 0.52',
  ('vpga', 'mnist'): '11.67 ± 0.21',
  ('vpga', 'cifar10'): '51.51 ± 1.16',
  ('vpga', 'celeba'): '24.73 ± 1.25',
  ('vae', 'mnist'): '15.55 ± 0.18',
  ('vae', 'cifar10'): '115.74 ± 0.63',
  ('vae', 'celeba'): '43.60 ± 0.33',
}

flags.DEFINE_list('methods', ['lpga', 'vpga', 'vae'], 'Methods (rows).')
flags.DEFINE_list('datasets', ['mnist', 'cifar10', 'celeba'], 'Datasets (columns).')
flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds; mean ± std over them.')
flags.DEFINE_string('features', 'inception', "'inception' (the paper's FID) or 'domain'.")
flags.DEFINE_string('inception_weights', None, 'Converted FID Inception weights (.npz).')
flags.DEFINE_integer('num_samples', 5000, 'Samples per FID (the paper: 5,000).')
flags.DEFINE_integer('num_steps', None, "Override every run's step count (smoke tests).")
flags.DEFINE_string(
  'dataset_override',
  None,
  'Train every run on this dataset instead (offline smoke tests: fashion_mnist or idx).',
)
flags.DEFINE_string('data_dir', None, 'data_dir for every run.')
flags.DEFINE_integer('batch_size', None, 'Override the batch size (smoke tests).')
flags.DEFINE_string('workroot', 'runs/table1', 'Where the runs live.')
flags.DEFINE_string('out', 'docs/table1.md', 'Markdown table to write (JSON beside it).')


def paper_config(method: str, dataset: str):
  path = os.path.join(CONFIG_DIR, f'{dataset}_{method}.py')
  spec = importlib.util.spec_from_file_location(f'{dataset}_{method}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def run_configs(f) -> dict:
  configs = {}
  for dataset in f.datasets:
    for method in f.methods:
      for seed in map(int, f.seeds):
        config = paper_config(method, dataset)
        config.seed = seed
        config.eval_every = 0  # evaluated once at the end, on num_samples samples
        if f.num_steps:
          config.num_steps = f.num_steps
          config.init_steps = min(config.init_steps, f.num_steps // 2)
          config.log_every = config.sample_every = config.checkpoint_every = f.num_steps
        if f.batch_size:
          config.batch_size = f.batch_size
        if f.dataset_override:
          config.dataset = f.dataset_override
        if f.data_dir:
          config.data_dir = f.data_dir
        configs[f'{dataset}/{method}_s{seed}'] = config
  return configs


def main(argv):
  del argv
  f = flags.FLAGS
  evaluators = {}

  def evaluator_for(config):
    key = (config.dataset, config.data_dir)
    if key not in evaluators:
      evaluators[key] = evaluate.evaluator_for_config(
        config, f.features, inception_weights=f.inception_weights
      )
    return evaluators[key]

  results = runner.run_grid(run_configs(f), f.workroot, evaluator_for, f.num_samples)
  rows = []
  for method in f.methods:
    row = [method.upper()]
    for dataset in f.datasets:
      fids = [r['fid'] for name, r in results.items() if name.startswith(f'{dataset}/{method}_s')]
      row.append(f'{runner.mean_std(fids)} (paper {PAPER_FID.get((method, dataset), "-")})')
    rows.append(row)
  title = f'FID ({f.features} features, {f.num_samples} samples, seeds {",".join(f.seeds)})\n\n'
  table = title + runner.markdown_table(rows, ['model'] + f.datasets)
  runner.write_text(f.out, table)
  storage.write_json(os.path.splitext(f.out)[0] + '.json', results)
  print(table)


if __name__ == '__main__':
  app.run(main)
