"""Shared machinery of the paper-reproduction scripts: train-or-resume, evaluate, tabulate.

Every run lives in its own workdir; `train_and_evaluate` resumes a finished or
interrupted run from its checkpoints, so a study can be stopped and restarted
(and spread over several sessions) without losing work. Evaluation results
are stored beside each run (`eval_<features>_<num_samples>.json`) and reused.
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
from absl import logging

from pga_jax import checkpointing, storage, train
from pga_jax.evaluation import evaluate


CURVE_FILE = 'eval_curve.jsonl'


def curve_recorder(evaluate_fn: Callable, workdir: str) -> Callable:
  """`evaluate_fn` that also appends each evaluation to workdir/eval_curve.jsonl."""

  def record(model, params, step):
    scalars = evaluate_fn(model, params, step)
    with open(os.path.join(workdir, CURVE_FILE), 'a') as f:
      f.write(json.dumps(dict(scalars, step=int(step)), default=float) + '\n')
    return scalars

  return record


def read_curve(workdir: str) -> list:
  """The run's evaluations during training, one dict per step (the last one
  written for a step wins: a resumed run may evaluate a step again)."""
  path = os.path.join(workdir, CURVE_FILE)
  if not os.path.exists(path):
    return []
  by_step = {}
  with open(path) as f:
    for line in f:
      if line.strip():
        row = json.loads(line)
        by_step[row['step']] = row
  return [by_step[s] for s in sorted(by_step)]


def find_runs(workroots: Sequence[str], methods: Sequence[str]) -> Dict[str, str]:
  """{label: workdir} of the study runs METHOD_sSEED of `methods` under each workroot.

  The label is the run's folder name (`lpga_s0`), prefixed with its workroot's
  folder name (`study10k_alt/lpga_s0`) when there are several workroots, in
  the order of the workroots, then of `methods`, then of the seeds.
  """
  names = [os.path.basename(os.path.normpath(root)) for root in workroots]
  if len(set(names)) < len(names):
    raise SystemExit(
      f'workroots {", ".join(workroots)} share a folder name, which labels their runs; '
      'give folders with different names'
    )
  runs = {}
  for root in workroots:
    prefix = os.path.basename(os.path.normpath(root)) + '/' if len(workroots) > 1 else ''
    for method in methods:
      for workdir in glob.glob(os.path.join(root, f'{method}_s*')):
        name = os.path.basename(workdir)
        if re.fullmatch(rf'{re.escape(method)}_s\d+', name):
          runs[prefix + name] = workdir
  return dict(sorted(runs.items(), key=lambda item: _run_order(item[0], workroots, methods)))


def find_runs_or_exit(
  script: str, workroots: Sequence[str], methods: Sequence[str]
) -> Dict[str, str]:
  """`find_runs`, or exit with one line naming what `script` looked for."""
  runs = find_runs(workroots, methods)
  if not runs:
    raise SystemExit(
      f'{script}: no runs METHOD_sSEED of {",".join(methods)} under '
      f'{",".join(workroots)}; train them first (experiments/fashion_study.py or pga train)'
    )
  return runs


# The evaluation's metrics as table columns: (result key, title, format).
METRIC_COLUMNS = (
  ('fid', 'FID', '.3g'),
  ('precision', 'precision', '.3f'),
  ('recall', 'recall', '.3f'),
  ('kid', 'KID', '.3g'),
  ('sharpness', 'sharpness', '.3f'),
  ('class_tv', 'class-mix TV', '.3f'),
)


def _run_order(label: str, workroots: Sequence[str], methods: Sequence[str]):
  prefix, method, seed = split_label(label)
  roots = [os.path.basename(os.path.normpath(r)) for r in workroots]
  return (roots.index(prefix) if prefix else 0, list(methods).index(method), seed)


def split_label(label: str) -> Tuple[str, str, int]:
  """A run label's (workroot folder or '', method, seed): 'study10k_alt/lpga_s1' ->
  ('study10k_alt', 'lpga', 1)."""
  prefix, _, name = label.rpartition('/')
  method, seed = name.rsplit('_s', 1)
  return prefix, method, int(seed)


def line_styles(labels: Sequence[str]) -> Dict[str, dict]:
  """{label: matplotlib line keywords}: one colour per method (the same in every
  panel of a figure, and under every workroot); the line style tells the
  workroot and the seed apart: under the first workroot a method's first seed
  is solid and its second dashed, under the second dotted and dash-dotted."""
  parts = {label: split_label(label) for label in labels}
  methods = list(dict.fromkeys(method for _, method, _ in parts.values()))
  prefixes = list(dict.fromkeys(prefix for prefix, _, _ in parts.values()))
  seen = {}
  styles = {}
  for label, (prefix, method, _) in parts.items():
    seed_index = seen.get((prefix, method), 0)
    seen[(prefix, method)] = seed_index + 1
    styles[label] = dict(
      color=f'C{methods.index(method) % 10}',
      linestyle=('-', '--', ':', '-.')[(2 * prefixes.index(prefix) + seed_index) % 4],
    )
  return styles


def train_run(config, workdir: str, stop_event=None) -> None:
  """Trains `config` in `workdir` to config.num_steps (resuming if it exists).

  With `config.eval_every`, evaluates during training (domain or Inception
  features, `config.eval_num_samples` samples) and records the curve. When
  `stop_event` is set (SIGTERM/SIGINT, `run_grid`), the run checkpoints after
  its current step and the study exits 0, to be resumed by the same command.
  """
  logging.info('=== %s (%d steps) -> %s', config.method, config.num_steps, workdir)
  evaluate_fn = None
  if config.eval_every:
    os.makedirs(workdir, exist_ok=True)
    evaluate_fn = curve_recorder(evaluate.training_evaluate_fn(config), workdir)
  result = train.train_and_evaluate(config, workdir, stop_event=stop_event, evaluate_fn=evaluate_fn)
  if result.preempted:
    print(
      f'stopped by a signal at step {result.step} of {workdir}, checkpointed; the same '
      'command resumes the study'
    )
    raise SystemExit(0)


def evaluate_run(
  workdir: str, evaluator: evaluate.Evaluator, num_samples: int, seed: int = 0
) -> dict:
  """Metrics of the run's latest checkpoint, cached as JSON in the workdir."""
  config, model, params, step = checkpointing.load_trained(workdir)
  path = os.path.join(workdir, f'eval_{evaluator.network.kind}_{num_samples}.json')
  if os.path.exists(path):
    with open(path) as f:
      cached = json.load(f)
    if cached.get('step') == step and cached.get('network_id') == evaluator.network.identity:
      return cached
  results = evaluate.evaluate_model(
    evaluator, model, params, config, num_samples, seed=seed, step=step
  )
  results['network_id'] = evaluator.network.identity
  storage.write_json(path, results)
  return results


def mean_std(values: Sequence[float]) -> str:
  values = np.asarray(values, np.float64)
  if values.size == 1:
    return f'{values[0]:.3g}'
  return f'{values.mean():.3g} ± {values.std(ddof=1):.2g}'


def markdown_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
  return '\n'.join(lines) + '\n'


def run_grid(
  configs: dict, workroot: str, evaluator_for: Callable, num_samples: int, only_train: bool = False
) -> dict:
  """Trains and evaluates every config of {name: config}; returns {name: results}.

  SIGTERM or SIGINT checkpoints the run in progress and exits 0.
  """
  from pga_jax.commands import train as train_command  # pylint: disable=g-import-not-at-top

  stop = train_command.install_stop_handlers()
  results = {}
  for name, config in configs.items():
    workdir = os.path.join(workroot, name)
    train_run(config, workdir, stop)
    if not only_train:
      results[name] = evaluate_run(workdir, evaluator_for(config), num_samples)
  return results


def write_text(path: str, text: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)
  return path


def save_sample_grid(
  workdir: str, out_path: str, num: int = 100, seed: int = 0, step: Optional[int] = None
) -> str:
  """Figure 1: a 10x10 grid of random samples of the run in `workdir`."""
  import jax  # pylint: disable=g-import-not-at-top
  from pga_jax import figures, sampling  # pylint: disable=g-import-not-at-top

  config, model, params, _ = checkpointing.load_trained(workdir, step)
  reference = sampling.reference_latents(model, config.batch_size, config.seed)
  images = sampling.sample(model, params, jax.random.PRNGKey(seed), num, reference)
  return figures.save_png(figures.sample_grid(images), out_path, scale=2)


def save_interpolation_grid(
  workdir: str, out_path: str, pairs: int = 8, split: str = 'test'
) -> str:
  """Figure 2: rows of (image a, 9 decoded steps between f(a) and f(b), image b)."""
  from pga_jax import config as config_lib, data, figures, sampling  # pylint: disable=g-import-not-at-top

  config, model, params, _ = checkpointing.load_trained(workdir)
  size, _, channels = config_lib.image_shape(config)
  images = data.scale_images(
    data.load_split(
      config.dataset, split, config.data_dir, image_size=size, channels=channels
    ).images[: 2 * pairs]
  )
  a, b = images[:pairs], images[pairs:]
  path = sampling.interpolate(model, params, a, b, steps=9)
  return figures.save_png(figures.interpolation_grid(a, path, b), out_path, scale=2)


def save_figure(fig, path: str, dpi: int) -> None:
  """Writes a matplotlib figure to `path` (its folder made if needed)."""
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=dpi)


def write_json_beside(path: str, value) -> str:
  """Writes `value` as JSON next to `path` (same name, extension .json)."""
  return storage.write_json(os.path.splitext(path)[0] + '.json', value, indent=1)
