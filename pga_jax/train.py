"""The training loop: `train_and_evaluate(config, workdir)`.

One readable loop. Data, models, losses, sharding, checkpoints and figures
live in their own modules; this file only wires them together:

  config -> validate -> data (BatchSource) -> model + method -> jitted step
  -> loop: step, metrics (clu), progress/ETA, figures, checkpoints.

Running `train_and_evaluate` again on the same workdir resumes from the
latest checkpoint and continues exactly (same batches, same random numbers).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from clu import metrics as clu_metrics

from pga_jax import checkpointing, config as config_lib, conv_forms, data, event_logs, figures
from pga_jax import sampling, sharding, storage, train_step as ts

FIGURE_IMAGES = 100  # the reference's sample batch for figures


class NonFiniteError(RuntimeError):
  """Too many consecutive steps had non-finite loss or gradients."""


@dataclasses.dataclass
class TrainResult:
  state: ts.TrainState
  step: int
  preempted: bool
  last_metrics: dict
  figure_paths: dict


def ensure_writable(workdir: str) -> None:
  """Checks, before the first step, every folder the run writes: workdir,
  checkpoints, figures (`storage.check_writable`; WorkdirError if one fails).

  A gs:// workdir has no folders to create: one probe object in it checks the
  bucket, the permission and the network, and nothing is created locally.
  """
  folders = [workdir]
  if not storage.is_remote(workdir):
    folders += [
      os.path.join(workdir, checkpointing.CHECKPOINT_DIR),
      os.path.join(workdir, 'figures'),
    ]
  for folder in folders:
    try:
      storage.check_writable(
        folder,
        what='workdir' if folder == workdir else 'the run directory',
        fix='choose a --workdir you can write to, or make that directory writable',
      )
    except storage.StorageError as err:
      raise checkpointing.WorkdirError(str(err)) from err


def load_training_images(config) -> np.ndarray:
  size, _, channels = config_lib.image_shape(config)
  split = data.load_split(
    config.dataset,
    'train',
    config.data_dir,
    image_size=size,
    channels=channels,
    skip_bad_files=config.skip_bad_files,
  )
  if split.num_skipped:
    logging.warning('Skipped %d unreadable files in %s.', split.num_skipped, config.data_dir)
  if len(split.images) < config.batch_size:
    raise config_lib.ConfigError(
      f'config.batch_size: {config.batch_size} is larger than the {len(split.images)} '
      f'training images of dataset {config.dataset!r}'
      + (f' in {config.data_dir}' if config.data_dir else '')
      + '; lower batch_size or add images'
    )
  return split.images


def local_copy(tree):
  """A host numpy copy of a replicated pytree (works on every host of a pod)."""
  return jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_data(0)), tree)


def average_metrics(step_metrics: list) -> dict:
  """Means of per-step metric dicts, with clu.metrics.Average."""
  names = sorted(step_metrics[0])
  collection_cls = clu_metrics.Collection.create(
    **{name: clu_metrics.Average.from_output(name) for name in names}
  )
  collection = None
  for m in step_metrics:
    update = collection_cls.single_from_model_output(**m)
    collection = update if collection is None else collection.merge(update)
  return {k: float(v) for k, v in collection.compute().items()}


class BadStepMonitor:
  """Counts consecutive non-finite steps; names the terms that went bad."""

  def __init__(self, limit: int):
    self.limit = limit
    self.streak = 0
    self.bad_terms = set()

  def update(self, step_metrics: list, first_step: int) -> None:
    for offset, m in enumerate(step_metrics):
      if m['finite'] > 0:
        self.streak, self.bad_terms = 0, set()
        continue
      self.streak += 1
      self.bad_terms |= {k for k, v in m.items() if k not in ('finite',) and not np.isfinite(v)}
      if self.limit and self.streak >= self.limit:
        terms = ', '.join(sorted(self.bad_terms)) or 'gradients only'
        raise NonFiniteError(
          f'{self.streak} consecutive steps up to step {first_step + offset + 1} had '
          f'non-finite values (in: {terms}); none of them was applied and the latest '
          'checkpoint is the last good state. Lower the learning rate or the coefficient '
          'of the named terms, then resume.'
        )


def write_figures(
  model, params, config, images: np.ndarray, workdir: str, step: int, writer
) -> dict:
  """The paper's figures for the current parameters, as PNG and in TensorBoard."""
  reference = sampling.reference_latents(model, config.batch_size, config.seed)
  rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 7)  # same latents every time
  samples = sampling.sample(model, params, rng, FIGURE_IMAGES, reference)
  shown = jnp.asarray(data.scale_images(images[:FIGURE_IMAGES]))
  recons = sampling.reconstruct(model, params, shown)
  path = sampling.interpolate(model, params, shown[:10], shown[10:20], steps=9)
  grids = {
    'samples': figures.sample_grid(samples),
    'reconstructions': figures.reconstruction_grid(np.asarray(shown[:50]), recons[:50]),
    'interpolations': figures.interpolation_grid(
      np.asarray(shown[:10]), path, np.asarray(shown[10:20])
    ),
  }
  out_dir = storage.join(workdir, 'figures')
  paths = {}
  for name, grid in grids.items():
    paths[name] = figures.save_png(grid, storage.join(out_dir, f'{name}_{step:08d}.png'), scale=2)
    figures.save_png(grid, storage.join(out_dir, f'{name}_latest.png'), scale=2)
  writer.write_images(step, {k: v[None] for k, v in grids.items()})
  return paths


def train_and_evaluate(
  config,
  workdir: str,
  stop_event: Optional[threading.Event] = None,
  evaluate_fn: Optional[Callable] = None,
) -> TrainResult:
  """Trains (or resumes) the run in `workdir` up to `config.num_steps`.

  stop_event: when set (e.g. by a SIGTERM handler), the loop finishes the
    current step, writes a checkpoint and returns with `preempted=True`.
  evaluate_fn: optional `evaluate_fn(model, params, step) -> dict of scalars`,
    called every `config.eval_every` steps.
  """
  dp = sharding.data_parallel()
  config_lib.validate(config, dp.num_devices)
  ensure_writable(workdir)
  is_main = jax.process_index() == 0

  manager = checkpointing.checkpoint_manager(
    workdir, config.keep_checkpoints, cleanup_tmp=True, keep_every=config.keep_checkpoint_every
  )
  resuming = manager.latest_step() is not None
  if resuming:
    checkpointing.check_compatible(checkpointing.load_config(workdir), config)
    # The convolution forms it computed with before, whatever the cache says now.
    conv_forms.pin(workdir)

  images = load_training_images(config)
  batches = data.BatchSource(
    images, config.batch_size, config.seed, jax.process_index(), jax.process_count()
  )
  setup = ts.train_setup(config)
  model = setup.model
  state_shardings = jax.tree_util.tree_map(lambda _: dp.replicated, ts.abstract_state(setup))
  if resuming:
    target = ts.abstract_state(setup, lambda _: dp.replicated)
    # The newest checkpoint that reads back intact; damaged newer ones are moved aside.
    state, _ = checkpointing.restore_latest_good(manager, target, workdir)
    logging.info('Resumed from step %d in %s', int(state.step), workdir)
  else:
    state = ts.create_train_state(setup, config.seed, state_shardings)
    checkpointing.write_config(workdir, config)

  step_fn = ts.jit_train_step(setup.loss_fn, setup.optimizer, state_shardings, dp)
  coefficients = dp.replicate(setup.coefficients)

  writer = event_logs.create_writer(workdir, just_logging=not is_main)
  if not resuming:
    writer.write_hparams(
      {k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str, bool))}
    )
  start = int(state.step)
  progress = event_logs.ProgressReport(config.num_steps, writer)
  bar = None
  if is_main and sys.stderr.isatty():
    import tqdm  # pylint: disable=g-import-not-at-top

    bar = tqdm.tqdm(total=config.num_steps, initial=start, unit='step', dynamic_ncols=True)

  monitor = BadStepMonitor(config.max_bad_steps)
  logging.info('Training from step %d to %d in %s', start, config.num_steps, workdir)
  pending, last_metrics, figure_paths = [], {}, {}
  step, preempted = start, False
  t_window = time.time()
  try:
    for step_index, local_batch in batches.iterate(start, config.num_steps - start):
      state, metrics = step_fn(state, dp.global_batch(local_batch), coefficients)
      pending.append(metrics)
      step = step_index + 1
      progress(step)
      if bar is not None:
        bar.update(1)
      final = step == config.num_steps
      # Agreed by all processes (a signal may reach only some hosts).
      preempted = stop_event is not None and sharding.any_process(stop_event.is_set()) and not final

      checkpoint_due = step % config.checkpoint_every == 0 or final or preempted
      # Metrics are also checked before each checkpoint, so no checkpoint is
      # written once max_bad_steps is reached.
      if step % config.log_every == 0 or checkpoint_due:
        host = jax.device_get(pending)
        monitor.update(host, step - len(host))
        last_metrics = average_metrics(host)
        last_metrics['steps_per_sec'] = len(host) / max(time.time() - t_window, 1e-9)
        writer.write_scalars(step, last_metrics)
        if bar is not None:
          bar.set_postfix(loss=f'{last_metrics["loss"]:.4f}')
        pending, t_window = [], time.time()

      if config.eval_every and evaluate_fn is not None and (step % config.eval_every == 0 or final):
        writer.write_scalars(step, evaluate_fn(model, local_copy(state.params), step))

      if checkpoint_due:
        if monitor.streak and not (final or preempted):
          # The state holds the last good parameters, but wait for a good step
          # so the latest checkpoint stays the state after a good step.
          logging.warning(
            'Step %d: not checkpointing during %d consecutive non-finite steps.',
            step,
            monitor.streak,
          )
        else:
          checkpointing.save(manager, state, step)
          conv_forms.record(workdir)
      # Not on preemption: the grace period is for the checkpoint.
      if is_main and (step % config.sample_every == 0 or final) and not preempted:
        figure_paths = write_figures(
          model, local_copy(state.params), config, images, workdir, step, writer
        )

      if preempted:
        logging.warning(
          'Stop requested: wrote checkpoint at step %d in %s; run the same '
          'command again to resume.',
          step,
          workdir,
        )
        break
  finally:
    try:
      checkpointing.wait_until_finished(manager)  # a failed write: CheckpointWriteError
    finally:
      writer.close()  # flushed (and, for gs://, uploaded)
      if bar is not None:
        bar.close()
  return TrainResult(state, step, preempted, last_metrics, figure_paths)
