"""Checkpoints (orbax) and the run's stored config.

A checkpoint holds the whole `TrainState`: parameters, optimizer state, step
and the run's RNG key. The data position is the step itself (batches are a
pure function of seed and step, see `pga_jax.data.BatchSource`), so restoring
the state resumes the data stream exactly.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import jax
import ml_collections
import orbax.checkpoint as ocp

CONFIG_FILE = 'config.json'
CHECKPOINT_DIR = 'checkpoints'

# Fields that change what is trained: a run cannot resume under other values.
STRUCTURAL_FIELDS = ('method', 'arch', 'latent_dim', 'use_bn', 'dataset', 'image_size',
                     'channels', 'batch_size', 'seed', 'optimizer', 'zn_rec', 'zh_rec',
                     'nll', 'vrec', 'vkld', 'beta', 'init_steps', 'num_perturbations',
                     'extra_terms', 'compute_dtype')


class WorkdirError(RuntimeError):
  """The workdir does not fit the requested run; the message says why and what to do."""


def checkpoint_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR)),
                               options=options)


def save(manager: ocp.CheckpointManager, state, step: int) -> None:
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)), force=True)


def restore(manager: ocp.CheckpointManager, abstract_state, step: Optional[int] = None):
  """Restores `step` (default: latest) into the structure/shardings of `abstract_state`."""
  step = manager.latest_step() if step is None else step
  restored = manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
  return restored['state']


def config_to_json(config) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise WorkdirError(f'{path} not found: {workdir!r} is not a pga_jax run directory '
                       '(train one with `pga train --config=... --workdir=...`).')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def _normalise(value):
  return json.loads(json.dumps(value, sort_keys=True, default=list))


def check_compatible(stored, config) -> None:
  """Raises WorkdirError naming each structural field that differs."""
  stored_d, new_d = _normalise(stored.to_dict()), _normalise(config.to_dict())
  differing = [f for f in STRUCTURAL_FIELDS if stored_d.get(f) != new_d.get(f)]
  if differing:
    details = '; '.join(f'{f}: stored {stored_d.get(f)!r}, given {new_d.get(f)!r}'
                        for f in differing)
    raise WorkdirError(f'the workdir holds a run with another config ({details}). '
                       'Use a new --workdir, or resume with the stored values.')


def write_config(workdir: str, config) -> None:
  """Writes the config atomically (process 0 only)."""
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, CONFIG_FILE)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(config_to_json(config))
  os.replace(tmp, path)


def load_trained(workdir: str, step: Optional[int] = None):
  """(config, model, params) of the run in `workdir`, on this host's first device."""
  # Imported here: checkpointing is imported by the trainer, which these import.
  from pga_jax import config as config_lib, methods, train_step as ts  # pylint: disable=g-import-not-at-top
  config = load_config(workdir)
  manager = checkpoint_manager(workdir, config.keep_checkpoints)
  available = manager.all_steps()
  if not available:
    raise WorkdirError(f'no checkpoint in {os.path.join(workdir, CHECKPOINT_DIR)}; '
                       'train first with `pga train`.')
  if step is not None and step not in available:
    raise WorkdirError(f'no checkpoint for step {step} in {workdir}; available: {sorted(available)}')
  _, _, channels = config_lib.image_shape(config)
  _, model, _ = methods.make_loss_fn(config, channels)
  optimizer = ts.make_optimizer(config)
  abstract = jax.eval_shape(lambda r: ts.init_train_state(model, optimizer, r),
                            jax.random.PRNGKey(0))
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract)
  state = restore(manager, target, step)
  return config, model, state.params, int(state.step)
