"""pga train --config=FILE --workdir=DIR [--config.FIELD=VALUE ...]

Trains, or resumes the run in --workdir from its latest checkpoint. SIGTERM or
SIGINT: finish the current step, write a checkpoint, exit 0.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from absl import flags, logging

from pga_jax.commands import common


def define_flags():
  common.define_config_flag()
  flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, logs, figures.')
  flags.mark_flags_as_required(['config', 'workdir'])
  flags.DEFINE_string(
    'coordinator_address',
    None,
    'Multi-host: host:port of process 0 (jax.distributed.initialize). '
    'Not needed on Cloud TPU, where it is automatic.',
  )
  flags.DEFINE_integer('num_processes', None, 'Multi-host: total number of processes.')
  flags.DEFINE_integer('process_id', None, 'Multi-host: this process index.')
  flags.DEFINE_bool(
    'distributed',
    False,
    'Call jax.distributed.initialize() even without the flags above '
    '(Cloud TPU pods, SLURM, or the JAX_COORDINATOR_ADDRESS environment).',
  )


def maybe_initialize_distributed():
  import jax  # pylint: disable=g-import-not-at-top

  f = flags.FLAGS
  if (
    f.coordinator_address
    or f.num_processes
    or f.distributed
    or os.environ.get('JAX_COORDINATOR_ADDRESS')
  ):
    jax.distributed.initialize(
      coordinator_address=f.coordinator_address,
      num_processes=f.num_processes,
      process_id=f.process_id,
    )
    logging.info(
      'process %d of %d, %d local / %d global devices',
      jax.process_index(),
      jax.process_count(),
      jax.local_device_count(),
      jax.device_count(),
    )


def install_stop_handlers() -> threading.Event:
  """SIGTERM/SIGINT: finish the current step, checkpoint, exit 0 (a second signal kills)."""
  stop = threading.Event()

  def handler(signum, frame):
    del frame
    if stop.is_set():
      raise KeyboardInterrupt
    logging.warning('Received signal %d: checkpointing after the current step.', signum)
    print(
      f'pga: signal {signum} received, stopping after this step and saving a checkpoint '
      '(send it again to abort without saving).',
      file=sys.stderr,
      flush=True,
    )
    stop.set()

  signal.signal(signal.SIGTERM, handler)
  signal.signal(signal.SIGINT, handler)
  return stop


def main(argv):
  del argv
  from pga_jax import checkpointing, config as config_lib, data, train  # pylint: disable=g-import-not-at-top

  f = flags.FLAGS
  maybe_initialize_distributed()
  stop = install_stop_handlers()
  from pga_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top

  try:
    # FID & co. every config.eval_every steps; built first, so problems show before training.
    evaluate_fn = evaluate.training_evaluate_fn(f.config) if f.config.eval_every else None
    result = train.train_and_evaluate(f.config, f.workdir, stop_event=stop, evaluate_fn=evaluate_fn)
  except (checkpointing.CheckpointWriteError, train.NonFiniteError) as err:
    common.work_error(err)  # failed during the work: exit status 1
  except (
    config_lib.ConfigError,
    data.DatasetError,
    checkpointing.WorkdirError,
    evaluate.EvaluationError,
  ) as err:
    common.user_error(err)
  import jax  # pylint: disable=g-import-not-at-top

  if jax.process_index() == 0:
    state = 'stopped early (resume with the same command)' if result.preempted else 'finished'
    print(f'pga: training {state} at step {result.step}.')
    print(f'pga: checkpoints: {os.path.join(f.workdir, checkpointing.CHECKPOINT_DIR)}')
    print(f'pga: TensorBoard logs: tensorboard --logdir={f.workdir}')
    for name, path in sorted(result.figure_paths.items()):
      print(f'pga: {name}: {path}')
