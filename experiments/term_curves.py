"""Plots each loss term of study runs against the step, from their TensorBoard logs.

`pga train` (and the study scripts, through it) logs every term of the method
under its name (rec, zn_rec, nll_enc, nll_dec, vrec, vkld, kl; see the
term table in docs/design.md) and grad_norm every `log_every` steps. This reads those
event files back and draws one panel per term, one line per run:

  python experiments/term_curves.py --workroot=runs/study10k --out=docs/study/term_curves.png

A run resumed from a checkpoint logs some steps twice (once before the
interruption, once after); the later value is kept. Writes the PNG, a JSON of
the curves beside it, and prints each term's value at each run's last logged
step.
"""

from __future__ import annotations

import glob
import os
import sys
from typing import Dict, List, Sequence, Tuple

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import runner  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_list(
  'workroot',
  ['runs/study10k'],
  'Folders holding the runs (METHOD_sSEED); with several, runs are labelled FOLDER/METHOD_sSEED.',
)
flags.DEFINE_string('out', 'docs/study/term_curves.png', 'Output PNG (a .json is written beside).')
flags.DEFINE_list('methods', ['vae', 'lpga', 'vpga', 'lvpga'], 'Methods, in plotting order.')
flags.DEFINE_list(
  'terms',
  ['rec', 'kl', 'zn_rec', 'nll_enc', 'nll_dec', 'vrec', 'vkld', 'grad_norm'],
  'Logged scalars to plot (those no run logged are skipped).',
)

Curves = Dict[str, Dict[str, List[List[float]]]]  # run -> tag -> [[step, value], ...]


def read_scalars(workdir: str) -> Dict[str, List[List[float]]]:
  """{tag: [[step, value], ...] sorted by step} of every scalar in the run's event files.

  A step logged more than once (again after a resume, in a later event file)
  keeps the value with the latest wall time. The files' names do not order
  them: two written in the same second differ only in a per-process counter,
  which sorts as text (10 before 9).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  latest: Dict[str, Dict[int, Tuple[float, float]]] = {}  # tag -> step -> (wall time, value)
  for path in glob.glob(os.path.join(workdir, 'events.out.tfevents.*')):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        kind = value.WhichOneof('value')
        if kind == 'simple_value':
          number = value.simple_value
        elif kind == 'tensor' and not value.tensor.tensor_shape.dim:
          array = tf.make_ndarray(value.tensor)
          if array.dtype.kind not in 'fiu':
            continue
          number = float(array)
        else:
          continue
        points = latest.setdefault(value.tag, {})
        step = int(event.step)
        if step not in points or event.wall_time >= points[step][0]:
          points[step] = (event.wall_time, float(number))
  return {tag: [[s, v] for s, (_, v) in sorted(points.items())] for tag, points in latest.items()}


def logged_hours(workdir: str) -> float:
  """Wall-clock hours of training: per event file (one per session of the run),
  the time between its first and last event, summed over the files."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  seconds = 0.0
  for path in glob.glob(os.path.join(workdir, 'events.out.tfevents.*')):
    times = [
      tf.compat.v1.Event.FromString(r.numpy()).wall_time for r in tf.data.TFRecordDataset(path)
    ]
    if times:
      seconds += max(times) - min(times)
  return seconds / 3600


def load_runs(workroots: Sequence[str], methods: Sequence[str]) -> Curves:
  """{run label: read_scalars(run)} of the runs METHOD_sSEED of the given
  methods under the workroots (labels as `runner.find_runs`)."""
  curves = {}
  for label, workdir in runner.find_runs(workroots, methods).items():
    scalars = read_scalars(workdir)
    if scalars:
      curves[label] = scalars
  return curves


def last_values_table(curves: Curves, terms: Sequence[str], hours: Dict[str, float]) -> str:
  """Each term's value at each run's last logged step ('' where a run has no
  such term), and the run's training hours (`logged_hours`)."""
  shown = [t for t in terms if any(t in c for c in curves.values())]
  rows = []
  for name, scalars in curves.items():
    row = [name]
    for term in shown:
      row.append(f'{scalars[term][-1][1]:.4g} @{scalars[term][-1][0]}' if term in scalars else '')
    rows.append(row + [f'{hours[name]:.2f}'])
  return runner.markdown_table(rows, ['run'] + shown + ['hours'])


def plot(curves: Curves, terms: Sequence[str], path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  shown = [t for t in terms if any(t in c for c in curves.values())]
  columns = min(4, len(shown))
  rows = -(-len(shown) // columns)
  styles = runner.line_styles(list(curves))  # a run keeps its colour in every panel
  fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
  for ax, term in zip(axes.flat, shown):
    for name, scalars in curves.items():
      if term in scalars:
        steps, values = zip(*scalars[term])
        ax.plot(steps, values, lw=1, label=name, **styles[name])
    ax.set_title(term)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
    if all(v > 0 for c in curves.values() for _, v in c.get(term, [])):
      ax.set_yscale('log')
  for ax in list(axes.flat)[len(shown) :]:
    ax.axis('off')
  handles = [
    matplotlib.lines.Line2D([], [], lw=1, label=name, **style) for name, style in styles.items()
  ]
  axes.flat[0].legend(handles=handles, fontsize=7)  # every run, even one without this term
  runner.save_figure(fig, path, dpi=100)


def main(argv):
  del argv
  f = flags.FLAGS
  curves = load_runs(f.workroot, f.methods)
  if not curves:
    raise SystemExit(
      f'term_curves: no TensorBoard event files under {",".join(f.workroot)} (METHOD_sSEED); '
      'train the runs first (experiments/fashion_study.py or pga train)'
    )
  plot(curves, f.terms, f.out)
  runner.write_json_beside(f.out, curves)
  runs = runner.find_runs(f.workroot, f.methods)
  hours = {name: logged_hours(runs[name]) for name in curves}
  print(last_values_table(curves, f.terms, hours))
  print(f'training time of these runs: {sum(hours.values()):.2f} h (wall clock)')


if __name__ == '__main__':
  app.run(main)
