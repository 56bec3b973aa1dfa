"""Helpers shared by the `pga` subcommands."""

from __future__ import annotations

import sys

from absl import flags


def user_error(err: Exception) -> None:
  """One line on stderr naming the problem, exit status 2 (usage or input), no traceback."""
  print(f'pga: error: {err}', file=sys.stderr)
  sys.exit(2)


def work_error(err: Exception) -> None:
  """One line on stderr naming the problem, exit status 1 (a failure during the work)."""
  print(f'pga: error: {err}', file=sys.stderr)
  sys.exit(1)


def check_count(flag: str, value: int, minimum: int = 1) -> None:
  """A count flag below `minimum` is a usage error."""
  if value < minimum:
    user_error(ValueError(f'--{flag} must be >= {minimum}, got {value}'))


def check_writable(flag: str, path: str) -> None:
  """Fails at once, naming `flag`, if the file `path` (local or gs://) cannot be
  written: `path` is a folder, or `storage.check_writable` fails on its folder."""
  from pga_jax import storage  # pylint: disable=g-import-not-at-top

  try:
    if storage.isdir(path):
      user_error(ValueError(f'--{flag}={path}: that is a folder; give a file name'))
    storage.check_writable(
      storage.dirname(path), what='its folder', fix='choose a path you can write to'
    )
  except OSError as err:  # StorageError: one line, with what to do
    user_error(ValueError(f'--{flag}={path}: {err}'))


def check_out(out: str) -> None:
  """--out: a .png or .npz file name in a place that can be written."""
  if not out.endswith(('.png', '.npz')):
    user_error(ValueError(f'--out={out!r}: use a .png or .npz file name'))
  check_writable('out', out)


def write_run_images(make_images) -> None:
  """The work of an image-writing command: the checks and the run
  (`load_run_for_images`), then the (images, grid) that
  `make_images(flags_values, config, model, params)` returns, written to --out."""
  f = flags.FLAGS
  config, model, params, _ = load_run_for_images(f)
  images, grid = make_images(f, config, model, params)
  write_images(images, grid, f.out)


def load_run_for_images(flags_values):
  """The checks every image-writing command makes (--num, --out), then its run:
  (config, model, params, step)."""
  check_count('num', flags_values.num)
  check_out(flags_values.out)
  return load_run(flags_values.workdir, flags_values.step)


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
  from pga_jax import data, figures, storage  # pylint: disable=g-import-not-at-top

  check_out(out)
  try:
    if out.endswith('.npz'):
      encoded = io.BytesIO()
      np.savez_compressed(encoded, images=data.to_uint8(images))
      storage.write_atomic(out, encoded.getvalue())
    else:
      figures.save_png(grid, out, scale=2)
  except OSError as err:
    work_error(ValueError(f'--out={out}: writing failed ({storage.describe(err)})'))
  print(f'pga: wrote {out}')


def data_images(config, num, split, what='--num'):
  """The first `num` images of a split of the run's dataset, in [-1, 1]."""
  from pga_jax import config as config_lib, data  # pylint: disable=g-import-not-at-top

  size, _, channels = config_lib.image_shape(config)
  try:
    images = data.load_split(
      config.dataset, split, config.data_dir, image_size=size, channels=channels
    ).images
  except data.DatasetError as err:
    user_error(err)
  if len(images) < num:
    user_error(
      ValueError(
        f'{what} needs {num} images but split {split!r} of dataset '
        f'{config.dataset!r} has {len(images)}; ask for fewer'
      )
    )
  return data.scale_images(images[:num])


def define_config_flag():
  """--config: the experiment config file (its fields can be set as --config.FIELD=VALUE)."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  config_flags.DEFINE_config_file(
    'config', None, 'Config file (experiments/configs/*.py).', lock_config=True
  )


def define_checkpoint_flags():
  """--workdir, --step: a checkpoint of a trained run."""
  flags.DEFINE_string('workdir', None, 'Run directory of a `pga train` run.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: latest).')


def define_run_flags():
  """--workdir, --step, --out: the flags of commands that read a trained run."""
  define_checkpoint_flags()
  flags.DEFINE_string('out', None, 'Output file: .png (grid) or .npz (uint8 images).')
  flags.mark_flags_as_required(['workdir', 'out'])


def define_dataset_flags(dataset_help: str):
  """--dataset (described by `dataset_help`) and --data_dir: a dataset named
  directly rather than through a run."""
  flags.DEFINE_string('dataset', None, dataset_help)
  flags.DEFINE_string('data_dir', None, 'Data directory for --dataset.')
