"""The CPU study: AE, VAE, LPGA, VPGA and LVPGA on Fashion-MNIST with one step budget.

Every method gets conv_mnist, batch 64, the same number of steps and the same
seeds, and the reference's MNIST coefficients. Every method trains with SGD,
lr 0.1, momentum 0.9, as the paper trains all its models (the VAE included);
`--vae=adam` gives the VAE the public VAE's Adam (lr 2e-4, beta1 0.5) instead.
Warm-up (LPGA, LVPGA): `--init_steps` steps, or `--warmup_fraction` of the
steps. A warm-up shorter than the reference's 3,000 steps is not the
reference's recipe, and switching every term on at once after it can diverge
(docs/switch_on.md), so such runs raise the terms over
`--warmup_ramp_steps` (default 500 there, 0 otherwise).

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
from pga_jax import config as config_lib, storage  # pylint: disable=g-import-not-at-top,wrong-import-position
from pga_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top,wrong-import-position

METHODS = ('ae', 'vae', 'lpga', 'vpga', 'lvpga')
# The tuning sweeps: three values around the starting setting of each swept
# field, one field at a time (the others at their start). The PGA methods'
# main coefficient; the VAE's (SGD) learning rate and beta, or with
# --vae=adam its beta alone (Adam's learning rate is the public VAE's).
SWEEP = {
  'vae': (('optimizer.learning_rate', (0.05, 0.1, 0.2)), ('beta', (0.05, 0.1, 0.2))),
  'lpga': (('nll', (0.0075, 0.015, 0.03)),),
  'vpga': (('vkld', (0.01, 0.02, 0.04)),),
}
SWEEP_ADAM_VAE = (('beta', (0.02, 0.05, 0.1)),)
# The reference's warm-up (LPGA, LVPGA), in steps.
REFERENCE_INIT_STEPS = 3000
SHORT_WARMUP_RAMP_STEPS = 500

flags.DEFINE_integer('steps', 1500, 'Training steps per run (the same for every method).')
flags.DEFINE_list('seeds', ['0'], 'Seeds; mean ± std over them.')
flags.DEFINE_list('methods', list(METHODS), 'Methods to run.')
flags.DEFINE_float('warmup_fraction', 1 / 3, 'LPGA/LVPGA warm-up as a fraction of the steps.')
flags.DEFINE_integer(
  'init_steps', None, 'LPGA/LVPGA warm-up in steps (overrides --warmup_fraction).'
)
flags.DEFINE_integer(
  'warmup_ramp_steps',
  None,
  'LPGA/LVPGA: raise the terms over this many steps after the warm-up (0: all at '
  f'once, the reference). Default: {SHORT_WARMUP_RAMP_STEPS} when the warm-up is '
  f"shorter than the reference's {REFERENCE_INIT_STEPS} steps, else 0.",
)
flags.DEFINE_enum(
  'vae',
  'sgd',
  ['sgd', 'adam'],
  "The VAE's optimizer: sgd (the paper's, as PGA's) or adam (the public VAE's).",
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
  warmup_ramp_steps=None,
  init_steps=None,
  vae: str = 'sgd',
):
  """One study run's config. `overrides` is {method: {field: value}}, a field
  named by its dotted path ('optimizer.learning_rate')."""
  config = config_lib.base_config(method)
  config.dataset = dataset
  config.data_dir = data_dir
  config.arch = 'conv_mnist'
  config.batch_size = batch_size
  config.seed = seed
  config.num_steps = steps
  if method == 'vae' and vae == 'adam':
    config_lib.public_vae_adam(config)
  if config.init_steps:
    config.init_steps = int(steps * warmup_fraction) if init_steps is None else init_steps
    if warmup_ramp_steps is None:
      short = config.init_steps < REFERENCE_INIT_STEPS
      warmup_ramp_steps = SHORT_WARMUP_RAMP_STEPS if short else 0
    config.warmup_ramp_steps = warmup_ramp_steps
  config.log_every = max(1, min(100, steps // 10))
  config.sample_every = steps
  config.checkpoint_every = max(1, min(500, steps))
  config.eval_features = 'domain'
  config.eval_every = eval_every
  config.eval_num_samples = num_samples
  for field, value in (overrides or {}).get(method, {}).items():
    *parents, leaf = field.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def sweep_runs(method: str, vae: str) -> list:
  """[(run name, {field: value})] of the method's sweep, one field varied at a
  time; a setting equal to one already listed (the start) is listed once."""
  fields = SWEEP_ADAM_VAE if (method == 'vae' and vae == 'adam') else SWEEP[method]
  start = {field: values[1] for field, values in fields}
  runs, seen = [], []
  for field, values in fields:
    for value in values:
      setting = dict(start, **{field: value})
      if setting not in seen:
        seen.append(setting)
        runs.append((f'sweep_{method}_{field.rsplit(".", 1)[-1]}{value}', {field: value}))
  return runs


def study_configs(f) -> dict:
  """{run name: config} of every run the flags ask for."""
  try:
    overrides = json.loads(f.overrides)
  except json.JSONDecodeError as e:
    raise SystemExit(
      f'--overrides is not JSON ({e}); give {{"method": {{"field": value}}}}, '
      'e.g. \'{"vae": {"beta": 0.05}}\''
    ) from None
  common = dict(
    steps=f.steps,
    warmup_fraction=f.warmup_fraction,
    dataset=f.dataset,
    data_dir=f.data_dir,
    batch_size=f.batch_size,
    eval_every=f.eval_every,
    num_samples=f.num_samples,
    warmup_ramp_steps=f.warmup_ramp_steps,
    init_steps=f.init_steps,
    vae=f.vae,
  )
  configs = {}
  for method in f.methods:
    if f.sweep:
      if method not in SWEEP:
        continue
      for name, setting in sweep_runs(method, f.vae):
        extra = {method: dict(overrides.get(method, {}), **setting)}
        configs[name] = study_config(method, 0, overrides=extra, **common)
    else:
      for seed in map(int, f.seeds):
        configs[f'{method}_s{seed}'] = study_config(method, seed, overrides=overrides, **common)
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


# The metrics of the results tables: (result key, column, format).
COLUMNS = runner.METRIC_COLUMNS


def tabulate(results: dict, sweep: bool, curves: dict = None) -> str:
  """Markdown table of the results: per sweep run (with the FID of each step its
  curve evaluated, from `curves` {name: [eval rows]}), or per method over seeds."""
  columns = [c for c in COLUMNS if all(c[0] in r for r in results.values())]
  rows = []
  if sweep:
    steps = sorted({row['step'] for rows_ in (curves or {}).values() for row in rows_})
    for name, r in sorted(results.items()):
      fid_at = {row['step']: row.get('eval_domain/fid') for row in (curves or {}).get(name, [])}
      rows.append(
        [name.replace('sweep_', '')]
        + [f'{fid_at[s]:.3g}' if fid_at.get(s) is not None else '' for s in steps]
        + [format(r[key], fmt) for key, _, fmt in columns]
      )
    header = ['run'] + [f'FID at {s:,}' for s in steps] + [title for _, title, _ in columns]
    return runner.markdown_table(rows, header)
  by_method = {}
  for name, r in results.items():
    by_method.setdefault(name.rsplit('_s', 1)[0], []).append(r)
  for method in METHODS:
    if method not in by_method:
      continue
    rs = by_method[method]
    rows.append(
      [method.upper()]
      + [runner.mean_std([r[key] for r in rs]) for key, _, _ in columns]
      + [str(len(rs))]
    )
  return runner.markdown_table(rows, ['method'] + [title for _, title, _ in columns] + ['seeds'])


def main(argv):
  del argv
  f = flags.FLAGS
  if f.print_configs:
    configs = study_configs(f)
    print(json.dumps({name: c.to_dict() for name, c in configs.items()}, sort_keys=True))
    return
  results = run_study(f)
  stem = 'sweep' if f.sweep else 'results'
  curves = {name: runner.read_curve(os.path.join(f.workroot, name)) for name in results}
  table = tabulate(results, f.sweep, curves)
  runner.write_text(os.path.join(f.out, f'{stem}.md'), table)
  storage.write_json(os.path.join(f.out, f'{stem}.json'), results)
  if not f.sweep:
    for method in f.methods:
      workdir = os.path.join(f.workroot, f'{method}_s{f.seeds[0]}')
      runner.save_sample_grid(workdir, os.path.join(f.out, f'samples_{method}.png'))
      runner.save_interpolation_grid(workdir, os.path.join(f.out, f'interpolations_{method}.png'))
  print(table)


if __name__ == '__main__':
  app.run(main)
