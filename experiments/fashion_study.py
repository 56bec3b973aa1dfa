"""The CPU study: AE, VAE, LPGA, VPGA and LVPGA on Fashion-MNIST with one step budget.

Every method gets conv_mnist, batch 64, the same number of steps and the same
seeds; PGA methods use the reference's MNIST coefficients (SGD, lr 0.1), the
VAE the reference VAE's optimizer (Adam 2e-4, beta1 0.5). Warm-up (LPGA,
LVPGA) is scaled to the budget: `warmup_fraction` of the steps.

  python experiments/fashion_study.py --steps=1500 --seeds=0 --out=docs/study
  python experiments/fashion_study.py --sweep --steps=500    # the tuning runs
  python experiments/fashion_study.py --print_configs ...    # what it would train

Runs live under --workroot and resume from their checkpoints: rerunning the
same command continues where it stopped. Writes `results.json`, `results.md`
(mean ± std over seeds of domain FID, precision, recall, KID on
--num_samples samples) and a sample grid per method under --out.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import runner  # pylint: disable=g-import-not-at-top,wrong-import-position
from pga_jax import config as config_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from pga_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top,wrong-import-position

METHODS = ('ae', 'vae', 'lpga', 'vpga', 'lvpga')
# The tuning sweep: the same number of values around the reference setting for
# the VAE's beta and for each PGA method's main coefficient.
SWEEP = {
  'vae': ('beta', (0.02, 0.05, 0.1)),
  'lpga': ('nll', (0.0075, 0.015, 0.03)),
  'vpga': ('vkld', (0.01, 0.02, 0.04)),
}

flags.DEFINE_integer('steps', 1500, 'Training steps per run (the same for every method).')
flags.DEFINE_list('seeds', ['0'], 'Seeds; mean ± std over them.')
flags.DEFINE_list('methods', list(METHODS), 'Methods to run.')
flags.DEFINE_float('warmup_fraction', 1 / 3, 'LPGA/LVPGA warm-up as a fraction of the steps.')
flags.DEFINE_integer(
  'warmup_ramp_steps',
  0,
  'LPGA/LVPGA: raise the terms over this many steps '
  'after the warm-up (0: all at once, the reference).',
)
flags.DEFINE_integer('num_samples', 5000, 'Samples per evaluation.')
flags.DEFINE_string('workroot', 'runs/study', 'Where the runs live.')
flags.DEFINE_string('out', 'docs/study', 'Where tables and figures go.')
flags.DEFINE_string(
  'overrides',
  '{}',
  'JSON {method: {field: value}} applied to configs (e.g. the values the sweep chose).',
)
flags.DEFINE_bool('sweep', False, 'Run the tuning sweep (SWEEP) instead of the study.')
flags.DEFINE_bool(
  'print_configs',
  False,
  'Print the config of every run as JSON ({run name: config}) and exit without training.',
)
flags.DEFINE_string('dataset', 'fashion_mnist', 'Dataset (tests use a small IDX one).')
flags.DEFINE_string('data_dir', None, 'Data directory for the dataset.')
flags.DEFINE_integer('batch_size', 64, 'Global batch size.')
flags.DEFINE_integer(
  'eval_every',
  0,
  'Evaluate (domain features, --num_samples samples) every '
  "this many steps during training and record the curve in each run's "
  'eval_curve.jsonl; 0: only at the end.',
)


def study_config(
  method: str,
  seed: int,
  steps: int,
  warmup_fraction: float,
  dataset: str = 'fashion_mnist',
  data_dir=None,
  batch_size: int = 64,
  overrides: dict = None,
  eval_every: int = 0,
  num_samples: int = 5000,
  warmup_ramp_steps: int = 0,
):
  config = config_lib.base_config(method)
  config.dataset = dataset
  config.data_dir = data_dir
  config.arch = 'conv_mnist'
  config.batch_size = batch_size
  config.seed = seed
  config.num_steps = steps
  if config.init_steps:
    config.init_steps = int(steps * warmup_fraction)
    config.warmup_ramp_steps = warmup_ramp_steps
  config.log_every = max(1, min(100, steps // 10))
  config.sample_every = steps
  config.checkpoint_every = max(1, min(500, steps))
  config.eval_features = 'domain'
  config.eval_every = eval_every
  config.eval_num_samples = num_samples
  for field, value in (overrides or {}).get(method, {}).items():
    config[field] = value
  return config


def study_configs(f) -> dict:
  """{run name: config} of every run the flags ask for."""
  try:
    overrides = json.loads(f.overrides)
  except json.JSONDecodeError as e:
    raise SystemExit(
      f'--overrides is not JSON ({e}); give {{"method": {{"field": value}}}}, '
      'e.g. \'{"vae": {"beta": 0.05}}\''
    ) from None
  configs = {}
  for method in f.methods:
    if f.sweep:
      if method not in SWEEP:
        continue
      field, values = SWEEP[method]
      for value in values:
        extra = {method: dict(overrides.get(method, {}), **{field: value})}
        configs[f'sweep_{method}_{field}{value}'] = study_config(
          method, 0, f.steps, f.warmup_fraction, f.dataset, f.data_dir, f.batch_size, extra
        )
    else:
      for seed in map(int, f.seeds):
        configs[f'{method}_s{seed}'] = study_config(
          method,
          seed,
          f.steps,
          f.warmup_fraction,
          f.dataset,
          f.data_dir,
          f.batch_size,
          overrides,
          f.eval_every,
          f.num_samples,
          f.warmup_ramp_steps,
        )
  return configs


def run_study(f) -> dict:
  configs = study_configs(f)
  evaluators = {}

  def evaluator_for(config):
    if config.dataset not in evaluators:
      evaluators[config.dataset] = evaluate.evaluator_for_config(config, 'domain')
    return evaluators[config.dataset]

  results = runner.run_grid(configs, f.workroot, evaluator_for, f.num_samples)
  return results


def tabulate(results: dict, sweep: bool) -> str:
  rows = []
  if sweep:
    for name, r in sorted(results.items()):
      rows.append(
        [
          name.replace('sweep_', ''),
          f'{r["fid"]:.3g}',
          f'{r["precision"]:.3f}',
          f'{r["recall"]:.3f}',
          f'{r["kid"]:.4f}',
        ]
      )
    return runner.markdown_table(rows, ['run', 'FID', 'precision', 'recall', 'KID'])
  by_method = {}
  for name, r in results.items():
    by_method.setdefault(name.rsplit('_s', 1)[0], []).append(r)
  for method in METHODS:
    if method not in by_method:
      continue
    rs = by_method[method]
    rows.append(
      [method.upper()]
      + [runner.mean_std([r[k] for r in rs]) for k in ('fid', 'precision', 'recall', 'kid')]
      + [str(len(rs))]
    )
  return runner.markdown_table(rows, ['method', 'FID', 'precision', 'recall', 'KID', 'seeds'])


def main(argv):
  del argv
  f = flags.FLAGS
  if f.print_configs:
    configs = study_configs(f)
    print(json.dumps({name: c.to_dict() for name, c in configs.items()}, sort_keys=True))
    return
  results = run_study(f)
  stem = 'sweep' if f.sweep else 'results'
  table = tabulate(results, f.sweep)
  runner.write_text(os.path.join(f.out, f'{stem}.md'), table)
  runner.write_text(
    os.path.join(f.out, f'{stem}.json'),
    json.dumps(results, indent=2, sort_keys=True, default=float),
  )
  if not f.sweep:
    for method in f.methods:
      workdir = os.path.join(f.workroot, f'{method}_s{f.seeds[0]}')
      runner.save_sample_grid(workdir, os.path.join(f.out, f'samples_{method}.png'))
      runner.save_interpolation_grid(workdir, os.path.join(f.out, f'interpolations_{method}.png'))
  print(table)


if __name__ == '__main__':
  app.run(main)
