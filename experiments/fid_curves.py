"""Plots and tabulates the evaluation curves of study runs (FID, precision, recall, sharpness, ...).

The runs are those of `experiments/fashion_study.py --eval_every=N`, which
records each evaluation during training in the run's `eval_curve.jsonl`:

  python experiments/fashion_study.py --steps=10000 --seeds=0 --methods=vae,lpga,vpga,lvpga \
      --eval_every=1000 --num_samples=5000 --workroot=runs/study10k --out=docs/study10k
  python experiments/fid_curves.py --workroot=runs/study10k --out=docs/study/fid_curves.png

Writes the PNG (FID, precision and recall against step, one line per run,
and sharpness and class-mix TV where the runs recorded them), a JSON of the
curves beside it, and prints a markdown table of the metrics at each run's
last evaluated step (mean ± std over seeds) and tables of the FID and the
sharpness of every run at every evaluated step.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import runner  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_list(
  'workroot',
  ['runs/study10k'],
  'Folders holding the runs (METHOD_sSEED); with several, runs are labelled FOLDER/METHOD_sSEED.',
)
flags.DEFINE_string('out', 'docs/study/fid_curves.png', 'Output PNG (a .json is written beside).')
flags.DEFINE_list('methods', ['vae', 'lpga', 'vpga', 'lvpga'], 'Methods, in plotting order.')

METRICS = (
  ('fid', 'domain FID', 'log'),
  ('precision', 'precision', 'linear'),
  ('recall', 'recall', 'linear'),
  ('sharpness', 'sharpness (1 = as sharp as the data)', 'linear'),
  ('class_tv', 'class-mix TV to real', 'linear'),
)
# Columns of the summary table; the last two only where every run recorded them.
SUMMARY = ('fid', 'precision', 'recall', 'kid', 'sharpness', 'class_tv')


def _metric_names(row: dict) -> dict:
  """A recorded evaluation with its metrics by bare name ('eval_domain/fid' -> 'fid')."""
  return {key.split('/', 1)[-1]: value for key, value in row.items()}


def load_curves(workroots, methods) -> dict:
  """{run label: [ {step, fid, precision, recall, kid, ...}, ... ]} of the given
  methods under the workroots (labels as `runner.find_runs`)."""
  curves = {}
  for label, workdir in runner.find_runs(workroots, methods).items():
    rows = [_metric_names(row) for row in runner.read_curve(workdir)]
    if rows:
      curves[label] = rows
  return curves


def summary_table(curves: dict) -> str:
  """Metrics at the last evaluated step of each run, mean ± std over the seeds of a setting."""
  finals = {}
  for label, rows in curves.items():
    prefix, method, _ = runner.split_label(label)
    finals.setdefault((prefix, method), []).append(rows[-1])
  keys = [k for k in SUMMARY if all(k in r for runs in finals.values() for r in runs)]
  rows = []
  for (prefix, method), runs in finals.items():
    steps = sorted({int(r['step']) for r in runs})
    rows.append(
      [prefix + '/' * bool(prefix) + method.upper(), '/'.join(map(str, steps))]
      + [runner.mean_std([r[k] for r in runs]) for k in keys]
      + [str(len(runs))]
    )
  titles = {'fid': 'FID', 'kid': 'KID', 'class_tv': 'class-mix TV'}
  return runner.markdown_table(
    rows, ['method', 'step'] + [titles.get(k, k) for k in keys] + ['seeds']
  )


def by_step_table(curves: dict, key: str = 'fid') -> str:
  """`key` of every run (columns) at every evaluated step (rows); '' where a run has none."""
  values = {
    label: {int(r['step']): r[key] for r in rows if key in r} for label, rows in curves.items()
  }
  steps = sorted({step for run in values.values() for step in run})
  rows = [
    [str(step)] + [f'{run[step]:.3g}' if step in run else '' for run in values.values()]
    for step in steps
  ]
  return runner.markdown_table(rows, ['step'] + list(values))


def plot(curves: dict, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  styles = runner.line_styles(list(curves))
  metrics = [m for m in METRICS if any(m[0] in r for rows in curves.values() for r in rows)]
  fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4))
  for ax, (key, title, scale) in zip(axes, metrics):
    for name, rows in curves.items():
      shown = [r for r in rows if key in r]
      ax.plot(
        [r['step'] for r in shown], [r[key] for r in shown], marker='.', label=name, **styles[name]
      )
    ax.set_title(title)
    ax.set_xlabel('step')
    ax.set_yscale(scale)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  runner.save_figure(fig, path, dpi=110)


def main(argv):
  del argv
  f = flags.FLAGS
  curves = load_curves(f.workroot, f.methods)
  if not curves:
    raise SystemExit(
      f'fid_curves: no eval_curve.jsonl under {",".join(f.workroot)}; train the runs with '
      'experiments/fashion_study.py --eval_every=N first'
    )
  plot(curves, f.out)
  runner.write_json_beside(f.out, curves)
  print(summary_table(curves))
  print(by_step_table(curves))
  if any('sharpness' in r for rows in curves.values() for r in rows):
    print(by_step_table(curves, 'sharpness'))


if __name__ == '__main__':
  app.run(main)
