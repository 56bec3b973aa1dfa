"""Data parallelism with JAX's own sharding: one mesh axis, 'data', over all devices.

The batch is sharded along 'data'; parameters and optimizer state are
replicated. `jax.jit` with these shardings compiles one SPMD program; means
over the batch axis (losses, batch-norm statistics) are means over the
*global* batch, so the maths does not depend on the device count.
"""
from __future__ import annotations

import dataclasses

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


def data_parallel(devices=None) -> DataParallel:
  """A 1-D mesh over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return DataParallel(Mesh(np.asarray(devices), (DATA_AXIS,)))
