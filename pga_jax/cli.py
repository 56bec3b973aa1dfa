"""The `pga` command: train, sample, reconstruct, interpolate.

  pga train --config=experiments/configs/quickstart.py --workdir=runs/qs [--config.FIELD=VALUE]
  pga sample --workdir=runs/qs --num=100 --out=samples.png   (or .npz)
  pga reconstruct --workdir=runs/qs --num=50 --out=recons.png
  pga interpolate --workdir=runs/qs --num=10 --out=interp.png

Each subcommand has --help. The CLI only parses flags and calls the library.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

from absl import app, flags, logging

COMMANDS = ('train', 'sample', 'reconstruct', 'interpolate')


def _define_distributed_flags():
  flags.DEFINE_string('coordinator_address', None,
                      'Multi-host: host:port of process 0 (jax.distributed.initialize). '
                      'Not needed on Cloud TPU, where it is automatic.')
  flags.DEFINE_integer('num_processes', None, 'Multi-host: total number of processes.')
  flags.DEFINE_integer('process_id', None, 'Multi-host: this process index.')
  flags.DEFINE_bool('distributed', False,
                    'Call jax.distributed.initialize() even without the flags above '
                    '(Cloud TPU pods, SLURM, or the JAX_COORDINATOR_ADDRESS environment).')


def _maybe_initialize_distributed():
  import jax  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  if f.coordinator_address or f.num_processes or f.distributed or os.environ.get(
      'JAX_COORDINATOR_ADDRESS'):
    jax.distributed.initialize(coordinator_address=f.coordinator_address,
                               num_processes=f.num_processes, process_id=f.process_id)
    logging.info('process %d of %d, %d local / %d global devices', jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())


def _install_stop_handlers() -> threading.Event:
  """SIGTERM/SIGINT: finish the current step, checkpoint, exit 0 (a second signal kills)."""
  stop = threading.Event()

  def handler(signum, frame):
    del frame
    if stop.is_set():
      raise KeyboardInterrupt
    logging.warning('Received signal %d: checkpointing after the current step.', signum)
    print(f'pga: signal {signum} received, stopping after this step and saving a checkpoint '
          '(send it again to abort without saving).', file=sys.stderr, flush=True)
    stop.set()

  signal.signal(signal.SIGTERM, handler)
  signal.signal(signal.SIGINT, handler)
  return stop


class _QuietLibraries:
  """absl log filter: INFO lines only from pga_jax and clu's metric writers.

  orbax and tfds log every file they touch at INFO; warnings still pass.
  """

  def filter(self, record) -> bool:
    if record.levelno >= 30:
      return True
    path = record.pathname.replace(os.sep, '/')
    return '/pga_jax/' in path or '/clu/' in path


def _user_error(err: Exception) -> None:
  print(f'pga: error: {err}', file=sys.stderr)
  sys.exit(2)


def _train_main(argv):
  del argv
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,unused-import
  from pga_jax import checkpointing, config as config_lib, data, train  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  _maybe_initialize_distributed()
  stop = _install_stop_handlers()
  config = f.config
  try:
    result = train.train_and_evaluate(config, f.workdir, stop_event=stop)
  except (config_lib.ConfigError, data.DatasetError, checkpointing.WorkdirError,
          train.NonFiniteError) as err:
    _user_error(err)
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    state = 'stopped early (resume with the same command)' if result.preempted else 'finished'
    print(f'pga: training {state} at step {result.step}.')
    print(f'pga: checkpoints: {os.path.join(f.workdir, checkpointing.CHECKPOINT_DIR)}')
    print(f'pga: TensorBoard logs: tensorboard --logdir={f.workdir}')
    for name, path in sorted(result.figure_paths.items()):
      print(f'pga: {name}: {path}')


def _load(workdir, step):
  from pga_jax import checkpointing  # pylint: disable=g-import-not-at-top
  try:
    return checkpointing.load_trained(workdir, step)
  except checkpointing.WorkdirError as err:
    _user_error(err)


def _write_images(images, grid, out):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from pga_jax import figures  # pylint: disable=g-import-not-at-top
  if out.endswith('.npz'):
    np.savez_compressed(out, images=figures.to_uint8(images))
  elif out.endswith('.png'):
    figures.save_png(grid, out, scale=2)
  else:
    _user_error(ValueError(f'--out={out!r}: use a .png or .npz file name'))
  print(f'pga: wrote {out}')


def _sample_main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  from pga_jax import figures, sampling  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  config, model, params, _ = _load(f.workdir, f.step)
  reference = sampling.reference_latents(model, config.batch_size, config.seed)
  images = sampling.sample(model, params, jax.random.PRNGKey(f.seed), f.num, reference)
  _write_images(images, figures.sample_grid(images, rows=max(1, int(round(f.num ** 0.5)))), f.out)


def _data_images(config, num, split):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from pga_jax import config as config_lib, data  # pylint: disable=g-import-not-at-top
  size, _, channels = config_lib.image_shape(config)
  try:
    images = data.load_split(config.dataset, split, config.data_dir, image_size=size,
                             channels=channels).images
  except data.DatasetError as err:
    _user_error(err)
  return images[:num].astype(np.float32) / 127.5 - 1.0


def _reconstruct_main(argv):
  del argv
  from pga_jax import figures, sampling  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  config, model, params, _ = _load(f.workdir, f.step)
  images = _data_images(config, f.num, f.split)
  recons = sampling.reconstruct(model, params, images)
  _write_images(recons, figures.reconstruction_grid(images, recons), f.out)


def _interpolate_main(argv):
  del argv
  from pga_jax import figures, sampling  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  config, model, params, _ = _load(f.workdir, f.step)
  images = _data_images(config, 2 * f.num, f.split)
  a, b = images[:f.num], images[f.num:2 * f.num]
  path = sampling.interpolate(model, params, a, b, steps=f.steps)
  _write_images(path, figures.interpolation_grid(a, path, b), f.out)


def _define_flags(command: str):
  if command == 'train':
    from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
    config_flags.DEFINE_config_file('config', None, 'Config file (experiments/configs/*.py).',
                                    lock_config=True)
    flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, logs, figures.')
    flags.mark_flags_as_required(['config', 'workdir'])
    _define_distributed_flags()
    return _train_main
  flags.DEFINE_string('workdir', None, 'Run directory of a `pga train` run.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: latest).')
  flags.DEFINE_string('out', None, 'Output file: .png (grid) or .npz (uint8 images).')
  flags.mark_flags_as_required(['workdir', 'out'])
  if command == 'sample':
    flags.DEFINE_integer('num', 100, 'Number of samples.')
    flags.DEFINE_integer('seed', 0, 'Random seed of the latents.')
    return _sample_main
  flags.DEFINE_string('split', 'test', 'Data split to take the images from.')
  if command == 'reconstruct':
    flags.DEFINE_integer('num', 50, 'Number of images to reconstruct.')
    return _reconstruct_main
  flags.DEFINE_integer('num', 10, 'Number of image pairs.')
  flags.DEFINE_integer('steps', 9, 'Points on each path, ends included.')
  return _interpolate_main


def run():
  """Console-script entry point."""
  if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
    print(__doc__.strip(), file=sys.stderr)
    print(f'\nusage: pga {{{",".join(COMMANDS)}}} [--help] [flags]', file=sys.stderr)
    sys.exit(0 if len(sys.argv) >= 2 and sys.argv[1] in ('-h', '--help') else 2)
  command = sys.argv[1]
  main = _define_flags(command)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  app.run(main, argv=[f'pga {command}'] + sys.argv[2:])


if __name__ == '__main__':
  run()
