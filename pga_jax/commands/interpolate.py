"""pga interpolate --workdir=DIR --num=N --out=FILE: decoded paths between encodings."""

from __future__ import annotations

from absl import flags

from pga_jax.commands import common


def define_flags():
  common.define_run_flags()
  flags.DEFINE_string('split', 'test', 'Data split to take the images from.')
  flags.DEFINE_integer('num', 10, 'Number of image pairs (one row each).')
  flags.DEFINE_integer(
    'steps',
    9,
    'Decoded points on each path, from f(a) to f(b) included; '
    'each row shows a, these points, then b.',
  )


def _paths(f, config, model, params):
  """Decoded paths between the encodings of --num pairs of --split images, and
  the grid of each pair around its path."""
  from pga_jax import figures, sampling  # pylint: disable=g-import-not-at-top

  images = common.data_images(config, 2 * f.num, f.split, what=f'--num={f.num} (pairs)')
  a, b = images[: f.num], images[f.num : 2 * f.num]
  path = sampling.interpolate(model, params, a, b, steps=f.steps)
  return path, figures.interpolation_grid(a, path, b)


def main(argv):
  del argv
  common.check_count('steps', flags.FLAGS.steps, 2)
  common.write_run_images(_paths)
