"""pga reconstruct --workdir=DIR --num=N --out=FILE: data images beside g(f(x))."""

from __future__ import annotations

from absl import flags

from pga_jax.commands import common


def define_flags():
  common.define_run_flags()
  flags.DEFINE_string('split', 'test', 'Data split to take the images from.')
  flags.DEFINE_integer('num', 50, 'Number of images to reconstruct.')


def main(argv):
  del argv
  from pga_jax import figures, sampling  # pylint: disable=g-import-not-at-top

  f = flags.FLAGS
  config, model, params, _ = common.load_run_for_images(f)
  images = common.data_images(config, f.num, f.split)
  recons = sampling.reconstruct(model, params, images)
  common.write_images(recons, figures.reconstruction_grid(images, recons), f.out)
