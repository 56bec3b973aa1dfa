"""Helpers shared by the `pga` subcommands."""
from __future__ import annotations

import os
import sys

from absl import flags


def user_error(err: Exception) -> None:
  """One line on stderr naming the problem, exit status 2, no traceback."""
  print(f'pga: error: {err}', file=sys.stderr)
  sys.exit(2)


def load_run(workdir, step):
  """(config, model, params, step) of a trained run, or a clear error."""
  from pga_jax import checkpointing  # pylint: disable=g-import-not-at-top
  try:
    return checkpointing.load_trained(workdir, step)
  except checkpointing.WorkdirError as err:
    user_error(err)


def write_images(images, grid, out):
  """Writes a .png grid or a .npz of uint8 images (a local path or a gs:// URL)."""
  import io  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from pga_jax import figures, storage  # pylint: disable=g-import-not-at-top
  try:
    if out.endswith('.npz'):
      encoded = io.BytesIO()
      np.savez_compressed(encoded, images=figures.to_uint8(images))
      storage.write_atomic(out, encoded.getvalue())
    elif out.endswith('.png'):
      figures.save_png(grid, out, scale=2)
    else:
      user_error(ValueError(f'--out={out!r}: use a .png or .npz file name'))
  except OSError as err:
    user_error(OSError(f'cannot write --out={out} ({storage.describe(err)})'))
  print(f'pga: wrote {out}')


def data_images(config, num, split):
  """The first `num` images of a split of the run's dataset, in [-1, 1]."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from pga_jax import config as config_lib, data  # pylint: disable=g-import-not-at-top
  size, _, channels = config_lib.image_shape(config)
  try:
    images = data.load_split(config.dataset, split, config.data_dir, image_size=size,
                             channels=channels).images
  except data.DatasetError as err:
    user_error(err)
  return images[:num].astype(np.float32) / 127.5 - 1.0


def define_run_flags():
  """--workdir, --step, --out: the flags of commands that read a trained run."""
  flags.DEFINE_string('workdir', None, 'Run directory of a `pga train` run.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: latest).')
  flags.DEFINE_string('out', None, 'Output file: .png (grid) or .npz (uint8 images).')
  flags.mark_flags_as_required(['workdir', 'out'])
