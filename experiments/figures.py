"""The paper's Figures 1 and 2 from trained runs: random samples and interpolations.

  python experiments/figures.py --runs=lpga=runs/celeba_lpga,vpga=runs/celeba_vpga,vae=runs/celeba_vae \
      --out=docs/figures

writes `figure1_<name>.png` (10x10 random samples) and `figure2_<name>.png`
(interpolations between the encodings of two test images in 9 steps, the two
images at the ends) for each run.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import runner  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_list('runs', None, 'name=workdir pairs.')
flags.DEFINE_string('out', 'docs/figures', 'Output folder.')
flags.DEFINE_integer('seed', 0, 'Seed of the random samples.')
flags.DEFINE_integer('pairs', 8, 'Interpolation rows.')
flags.mark_flag_as_required('runs')


def main(argv):
  del argv
  f = flags.FLAGS
  for item in f.runs:
    name, _, workdir = item.partition('=')
    if not workdir:
      raise app.UsageError(f'--runs: expected name=workdir, got {item!r}')
    print(runner.save_sample_grid(workdir, os.path.join(f.out, f'figure1_{name}.png'), seed=f.seed))
    print(
      runner.save_interpolation_grid(
        workdir, os.path.join(f.out, f'figure2_{name}.png'), pairs=f.pairs
      )
    )


if __name__ == '__main__':
  app.run(main)
