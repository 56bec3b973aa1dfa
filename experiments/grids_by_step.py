"""Sample grids of several runs at the same steps, side by side (one row per run).

Each run of a study writes its sample grid every `sample_every` steps
(`figures/samples_<step>.png`: 100 samples from the same latents every time).
This script puts the grids of the given steps next to each other:

  python experiments/grids_by_step.py --workroot=runs/study50k,runs/study50k_adam \\
      --methods=vae,lpga,vpga,lvpga --steps=10000,25000,50000 --out=docs/study50k/grids.png

A run without a grid at a step gets an empty cell, labelled 'not reached'.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import runner  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_list('workroot', ['runs/study50k'], 'Folders holding the runs (METHOD_sSEED).')
flags.DEFINE_list('methods', ['vae', 'lpga', 'vpga', 'lvpga'], 'Methods, in row order.')
flags.DEFINE_list('steps', ['10000', '25000', '50000'], 'Steps, in column order.')
flags.DEFINE_string('out', 'docs/study50k/grids.png', 'Output PNG.')


def grid_path(workdir: str, step: int) -> str:
  return os.path.join(workdir, 'figures', f'samples_{step:08d}.png')


def load_grids(runs: dict, steps) -> dict:
  """{(label, step): image array or None}."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  grids = {}
  for label, workdir in runs.items():
    for step in steps:
      path = grid_path(workdir, step)
      grids[(label, step)] = np.asarray(Image.open(path)) if os.path.exists(path) else None
  return grids


def plot(grids: dict, labels, steps, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(
    len(labels), len(steps), figsize=(3.2 * len(steps), 3.4 * len(labels)), squeeze=False
  )
  for row, label in enumerate(labels):
    for col, step in enumerate(steps):
      ax = axes[row][col]
      image = grids[(label, step)]
      if image is None:
        ax.text(0.5, 0.5, 'not reached', ha='center', va='center', color='grey')
      else:
        ax.imshow(image, cmap='gray', vmin=0, vmax=255)
      ax.set_xticks([])
      ax.set_yticks([])
      if row == 0:
        ax.set_title(f'step {step:,}')
      if col == 0:
        ax.set_ylabel(label)
  runner.save_figure(fig, path, dpi=100)


def main(argv):
  del argv
  f = flags.FLAGS
  runs = runner.find_runs_or_exit('grids_by_step', f.workroot, f.methods)
  steps = [int(s) for s in f.steps]
  grids = load_grids(runs, steps)
  plot(grids, list(runs), steps, f.out)
  found = sum(g is not None for g in grids.values())
  print(f'grids_by_step: {found} of {len(grids)} grids -> {f.out}')


if __name__ == '__main__':
  app.run(main)
