"""Data parallelism with JAX's own sharding: one mesh axis, 'data', over all devices.

The batch is sharded along 'data'; parameters and optimizer state are
replicated. `jax.jit` with these shardings compiles one SPMD program; means
over the batch axis (losses, batch-norm statistics) are means over the
*global* batch, so the maths does not depend on the device count.

Arrays made inside the step whose size is the batch size but that do not come
from the batch (prior draws) would otherwise be computed whole on every
device; `shard_rows` lays them out like the batch (see `DataParallel.traced`).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


@dataclasses.dataclass(frozen=True)
class DataParallel:
  mesh: Mesh

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def batch(self) -> NamedSharding:
    return NamedSharding(self.mesh, P(DATA_AXIS))

  @property
  def num_devices(self) -> int:
    return self.mesh.devices.size

  def global_batch(self, local_batch: np.ndarray) -> jax.Array:
    """Assembles the global batch from this process's rows (disjoint per host)."""
    return jax.make_array_from_process_local_data(self.batch, local_batch)

  def replicate(self, tree):
    """A pytree of host values (the same on every process) as arrays replicated over the mesh."""
    return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(self.replicated, np.asarray(x)), tree
    )

  def traced(self, fn):
    """`fn`, traced with this mesh as JAX's abstract mesh, so `shard_rows` applies in it."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
      with jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh):
        return fn(*args, **kwargs)

    return wrapped


def shard_rows(x: jax.Array, axis: int = 0) -> jax.Array:
  """Splits `x` along `axis` over the 'data' axis, like the batch; else a no-op.

  Only inside a function wrapped by `DataParallel.traced` (the train step).
  Random draws shaped like the batch, e.g. the prior samples of L_lr,N, have
  no sharded input, so without this XLA computes them, and the networks run
  on them, in full on every device. Values do not change (JAX's partitionable
  threefry draws the same numbers for any sharding).
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or DATA_AXIS not in mesh.axis_names:
    return x
  spec = [None] * x.ndim
  spec[axis] = DATA_AXIS
  return jax.lax.with_sharding_constraint(x, P(*spec))


def any_process(flag: bool) -> bool:
  """True on every process if `flag` is True on any one of them.

  A collective: every process must call it at the same point (e.g. once per
  step), and it waits for the devices, so single-process runs skip it. The
  trainer uses it so that a stop signal that reaches only some hosts (or
  reaches them at different steps) stops all of them after the same step:
  otherwise the others would wait forever in the next step's all-reduce.
  """
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return bool(np.any(multihost_utils.process_allgather(np.int32(bool(flag)))))


def data_parallel(devices=None) -> DataParallel:
  """A 1-D mesh over `devices` (default: every device of every process).

  Process-major order: process p's devices hold rows [p*B/P, (p+1)*B/P) of the
  global batch B, the rows `data.BatchSource` gives process p of P, so the
  global batch is the same on any topology.
  """
  devices = jax.devices() if devices is None else devices
  devices = sorted(devices, key=lambda d: (d.process_index, d.id))
  return DataParallel(Mesh(np.asarray(devices), (DATA_AXIS,)))
