"""Checkpoints (orbax) and the run's stored config.

A checkpoint holds the whole `TrainState`: parameters, optimizer state, step
and the run's RNG key. The data position is the step itself (batches are a
pure function of seed and step, see `pga_jax.data.BatchSource`), so restoring
the state resumes the data stream exactly.

Each checkpoint also stores a SHA-256 digest of the state it holds (item
'digest', written in the same atomic orbax commit). Restoring recomputes it,
so a truncated or bit-flipped checkpoint is detected instead of silently
loaded; `restore_latest_good` then falls back to the newest intact one and
moves the damaged ones to `<workdir>/corrupt_checkpoints/` (never deletes
them). Orbax writes each checkpoint to a temporary directory and renames it
when complete, so a process killed mid-write leaves no half checkpoint behind;
the trainer's manager removes such leftovers when it starts. On gs:// (no
renames) orbax writes the step's directory in place and marks it complete
with a final `commit_success.txt`; a step without it is not a checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import List, Optional, Tuple

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from pga_jax import config_fields, conv_forms, storage

CONFIG_FILE = 'config.json'
CHECKPOINT_DIR = 'checkpoints'
QUARANTINE_DIR = 'corrupt_checkpoints'  # damaged checkpoints are moved here, never deleted
DIGEST_ITEM = 'digest'

# Fields that change what is trained: a run cannot resume under other values.
# Fields a resumed run must keep (config_fields.Field.structural).
STRUCTURAL_FIELDS = config_fields.STRUCTURAL


class WorkdirError(RuntimeError):
  """The workdir does not fit the requested run; the message says why and what to do."""


def checkpoint_manager(
  workdir: str, keep: int, cleanup_tmp: bool = False, keep_every: int = 0
) -> ocp.CheckpointManager:
  """The run's orbax manager.

  keep: how many of the newest checkpoints are kept.
  keep_every: > 0 also keeps every checkpoint whose step is a multiple of it
    (for looking at a run at earlier steps).
  cleanup_tmp: remove the temporary directories of checkpoint writes that were
    killed before they completed (only the trainer sets it: a reader must not
    remove the write of a run in progress).
  """
  if keep_every:
    policies = ocp.checkpoint_managers
    options = ocp.CheckpointManagerOptions(
      preservation_policy=policies.AnyPreservationPolicy(
        [policies.LatestN(keep), policies.EveryNSteps(keep_every)]
      ),
      create=True,
      cleanup_tmp_directories=cleanup_tmp,
    )
  else:
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, cleanup_tmp_directories=cleanup_tmp
    )
  return ocp.CheckpointManager(
    storage.absolute(storage.join(workdir, CHECKPOINT_DIR)), options=options
  )


def state_digest(state) -> str:
  """SHA-256 over every leaf's path, dtype, shape and bytes (this host's copy)."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    if isinstance(leaf, jax.Array):
      leaf = leaf.addressable_data(0)
    array = np.ascontiguousarray(np.asarray(leaf))
    digest.update(f'{jax.tree_util.keystr(path)}:{array.dtype}:{array.shape};'.encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


def save(manager: ocp.CheckpointManager, state, step: int) -> None:
  """Saves `state` and its digest as checkpoint `step` (asynchronously; one atomic commit)."""
  digest = {'sha256': state_digest(state), 'step': int(step)}
  try:  # also raises the error of the previous (asynchronous) save, if it failed
    manager.save(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardSave(state), digest=ocp.args.JsonSave(digest)),
      force=True,
    )
  except Exception as err:  # pylint: disable=broad-except
    raise _write_error(manager, err) from err


def wait_until_finished(manager: ocp.CheckpointManager) -> None:
  """Waits for the pending asynchronous save; a failed write is a CheckpointWriteError."""
  try:
    manager.wait_until_finished()
  except Exception as err:  # pylint: disable=broad-except
    raise _write_error(manager, err) from err


class CheckpointWriteError(WorkdirError):
  """Writing a checkpoint failed (disk full, quota, permissions); older ones are intact."""


def _write_error(manager: ocp.CheckpointManager, err: BaseException) -> CheckpointWriteError:
  return CheckpointWriteError(
    f'writing a checkpoint to {manager.directory} failed ({_short(err)}); the checkpoints '
    'already there are intact (an unfinished write is never taken for one). Free disk '
    'space or fix the directory, then run the same command to resume.'
  )


class CorruptCheckpointError(WorkdirError):
  """A checkpoint cannot be read back intact."""


def _step_dir(manager: ocp.CheckpointManager, step: int) -> str:
  return storage.join(str(manager.directory), str(step))


# Operating-system causes a user can act on, named even when TensorStore
# buries them in the middle of a long message or on a later line.
OS_CAUSES = (
  'No space left on device',
  'File too large',
  'Disk quota exceeded',
  'Read-only file system',
  'Permission denied',
)


def _short(err: BaseException) -> str:
  """The first line of an error (orbax/TensorStore errors span many lines), shortened.

  Keeps both ends of a long line (TensorStore often puts the cause, e.g. 'No
  space left on device', at the end), and names an operating-system cause
  found anywhere in the error when the shortened line lost it (where it sits
  depends on which of the checkpoint's files failed first).
  """
  full = str(err).strip()
  text = (full.splitlines() or [''])[0]
  text = text if len(text) <= 240 else f'{text[:120]} ... {text[-115:]}'
  lost = [cause for cause in OS_CAUSES if cause in full and cause not in text]
  if lost:
    text = f'{lost[0]}: {text}'
  return f'{type(err).__name__}: {text}' if text else type(err).__name__


def restore(manager: ocp.CheckpointManager, abstract_state, step: Optional[int] = None):
  """Restores `step` (default: latest) into the structure/shardings of `abstract_state`.

  Verifies the stored digest (checkpoints written before digests existed are
  loaded unverified). Raises CorruptCheckpointError, naming the step and the
  problem, if the checkpoint cannot be read or does not match its digest.
  """
  step = manager.latest_step() if step is None else step
  has_digest = storage.isdir(storage.join(_step_dir(manager, step), DIGEST_ITEM))
  items = {'state': ocp.args.StandardRestore(abstract_state)}
  if has_digest:
    items['digest'] = ocp.args.JsonRestore()
  try:
    restored = manager.restore(step, args=ocp.args.Composite(**items))
  except Exception as err:  # pylint: disable=broad-except  (orbax/TensorStore raise many types)
    raise CorruptCheckpointError(
      f'checkpoint {_step_dir(manager, step)} cannot be read ({_short(err)})'
    ) from err
  state = restored['state']
  if has_digest:
    expected = (restored['digest'] or {}).get('sha256')
    if expected != state_digest(state):
      raise CorruptCheckpointError(
        f'checkpoint {_step_dir(manager, step)} is corrupted: its contents do not match '
        'the checksum written with it'
      )
  return state


def _quarantine(manager: ocp.CheckpointManager, workdir: str, steps: List[int]) -> List[str]:
  """Moves the directories of `steps` to <workdir>/corrupt_checkpoints/ (process 0)."""
  target_dir = storage.join(workdir, QUARANTINE_DIR)
  moved = []
  for step in steps:
    target = storage.join(target_dir, f'{step}-{time.strftime("%Y%m%d-%H%M%S")}')
    if jax.process_index() == 0:
      storage.makedirs(target_dir)
      suffix = 0
      while storage.exists(target + (f'-{suffix}' if suffix else '')):
        suffix += 1
      target += f'-{suffix}' if suffix else ''
      storage.move(_step_dir(manager, step), target)
    moved.append(target)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    multihost_utils.sync_global_devices('pga_jax_quarantine_checkpoints')
  manager.reload()
  return moved


def restore_latest_good(
  manager: ocp.CheckpointManager, abstract_state, workdir: str, quarantine: bool = True
) -> Tuple[object, int]:
  """(state, step) of the newest checkpoint that reads back intact.

  Newer checkpoints that cannot be read (truncated, corrupted, checksum
  mismatch) are reported with a warning and, when `quarantine` is set and an
  older intact one was found, moved to <workdir>/corrupt_checkpoints/ so they
  no longer count as the latest (nothing is deleted). If no checkpoint can be
  read, nothing is moved and a WorkdirError says what to do.
  """
  failures = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      state = restore(manager, abstract_state, step)
    except CorruptCheckpointError as err:
      logging.warning('%s; trying the previous checkpoint.', err)
      failures.append((step, err))
      continue
    if failures:
      bad = ', '.join(str(s) for s, _ in failures)
      if quarantine:
        moved = _quarantine(manager, workdir, [s for s, _ in failures])
        where = f'moved to {storage.dirname(moved[0])} for inspection'
      else:
        where = 'left in place'
      logging.warning(
        'Checkpoint(s) %s could not be read (%s); resuming from step %d '
        'instead (damaged checkpoint(s) %s).',
        bad,
        failures[0][1],
        step,
        where,
      )
    return state, step
  directory = storage.join(workdir, CHECKPOINT_DIR)
  if not failures:
    raise WorkdirError(f'no checkpoint in {directory}; train first with `pga train`.')
  raise WorkdirError(
    f'no checkpoint in {directory} can be read (latest: {failures[0][1]}). Nothing was '
    'changed. If the checkpoints were written with another config, fix config.json; '
    f'otherwise move {directory} aside to start the run again.'
  )


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = storage.join(workdir, CONFIG_FILE)
  try:
    found = storage.exists(path)
  except OSError as err:
    raise WorkdirError(f'cannot read the run config {path} ({_short(err)})') from err
  if not found:
    raise WorkdirError(
      f'{path} not found: {workdir!r} is not a pga_jax run directory '
      '(train one with `pga train --config=... --workdir=...`).'
    )
  try:
    with storage.open(path) as f:
      return config_fields.upgrade(ml_collections.ConfigDict(json.load(f)))
  except (OSError, ValueError, TypeError) as err:
    raise WorkdirError(
      f'cannot read the run config {path} ({_short(err)}); restore it from '
      'a copy, or use a new --workdir'
    ) from err


def _normalise(value):
  return json.loads(json.dumps(value, sort_keys=True, default=list))


def check_compatible(stored, config) -> None:
  """Raises WorkdirError naming each structural field that differs."""
  stored_d, new_d = _normalise(stored.to_dict()), _normalise(config.to_dict())

  def value(config_dict, field):
    return _normalise(config_fields.get(config_dict, field, missing=None))

  differing = [f for f in STRUCTURAL_FIELDS if value(stored_d, f) != value(new_d, f)]
  if differing:
    details = '; '.join(
      f'{f}: stored {value(stored_d, f)!r}, given {value(new_d, f)!r}' for f in differing
    )
    raise WorkdirError(
      f'the workdir holds a run with another config ({details}). '
      'Use a new --workdir, or resume with the stored values.'
    )


def write_config(workdir: str, config) -> None:
  """Writes the config atomically (process 0 only)."""
  if jax.process_index() != 0:
    return
  storage.write_json(storage.join(workdir, CONFIG_FILE), config.to_dict(), default=list)


def load_trained(workdir: str, step: Optional[int] = None):
  """(config, model, params, step) of the run in `workdir`, on this host's
  first device: the checkpoint of `step`, or the newest intact one."""
  # Imported here: train_step imports methods and the models, which the
  # trainer's other light users of checkpointing do not need.
  from pga_jax import train_step as ts  # pylint: disable=g-import-not-at-top

  config = load_config(workdir)
  manager = checkpoint_manager(workdir, config.keep_checkpoints)
  available = manager.all_steps()
  if not available:
    raise WorkdirError(
      f'no checkpoint in {storage.join(workdir, CHECKPOINT_DIR)}; train first with `pga train`.'
    )
  if step is not None and step not in available:
    raise WorkdirError(
      f'no checkpoint for step {step} in {workdir}; available: {sorted(available)}'
    )
  conv_forms.pin(workdir)  # compute with the forms the run trained with
  setup = ts.train_setup(config)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = ts.abstract_state(setup, lambda _: device)
  if step is None:  # the newest intact one (damaged newer ones are reported, not moved)
    state, _ = restore_latest_good(manager, target, workdir, quarantine=False)
  else:
    state = restore(manager, target, step)
  return config, setup.model, state.params, int(state.step)
