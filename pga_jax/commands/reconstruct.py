"""pga reconstruct --workdir=DIR --num=N --out=FILE: data images beside g(f(x))."""

from __future__ import annotations

from absl import flags

from pga_jax.commands import common


def define_flags():
  common.define_run_flags()
  flags.DEFINE_string('split', 'test', 'Data split to take the images from.')
  flags.DEFINE_integer('num', 50, 'Number of images to reconstruct.')


def _reconstructions(f, config, model, params):
  """g(f(x)) of the first --num images x of --split, and the grid of both."""
  from pga_jax import figures, sampling  # pylint: disable=g-import-not-at-top

  images = common.data_images(config, f.num, f.split)
  recons = sampling.reconstruct(model, params, images)
  return recons, figures.reconstruction_grid(images, recons)


def main(argv):
  del argv
  common.write_run_images(_reconstructions)
