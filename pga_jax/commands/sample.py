"""pga sample --workdir=DIR --num=N --out=FILE.png|.npz: random samples g(z), z ~ N(0, I)."""

from __future__ import annotations

from absl import flags

from pga_jax.commands import common


def define_flags():
  common.define_run_flags()
  flags.DEFINE_integer('num', 100, 'Number of samples.')
  flags.DEFINE_integer('seed', 0, 'Random seed of the latents.')


def _samples(f, config, model, params):
  """--num samples g(z), z ~ N(0, I) drawn with --seed, and their grid."""
  import jax  # pylint: disable=g-import-not-at-top
  from pga_jax import figures, sampling  # pylint: disable=g-import-not-at-top

  reference = sampling.reference_latents(model, config.batch_size, config.seed)
  images = sampling.sample(model, params, jax.random.PRNGKey(f.seed), f.num, reference)
  rows = max(1, int(round(f.num**0.5)))
  return images, figures.sample_grid(images, rows=rows)


def main(argv):
  del argv
  common.write_run_images(_samples)
