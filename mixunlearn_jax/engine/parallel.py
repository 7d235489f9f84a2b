"""Data parallelism: one ('data',) mesh, batches sharded, state replicated."""

import collections
import functools
import itertools
import os

from absl import logging
import jax
from jax.sharding import NamedSharding, PartitionSpec as P


def maybe_initialize_distributed():
  """Joins a multi-process job when the environment describes one.

  jax.distributed.initialize() auto-detects SLURM, Open MPI and Cloud TPU;
  JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID cover the rest.
  """
  markers = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
             "TPU_WORKER_HOSTNAMES")
  if any(os.environ.get(m) for m in markers) and not jax.distributed.is_initialized():
    jax.distributed.initialize()
    logging.info("Process %d of %d joined the job.", jax.process_index(), jax.process_count())


def make_mesh():
  return jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh):
  return NamedSharding(mesh, P())


def data_sharded(mesh):
  return NamedSharding(mesh, P("data"))


def check_batch_size(batch_size, mesh, field="batch_size"):
  """Raises a ValueError naming valid sizes when the batch does not split evenly."""
  devices = mesh.devices.size
  if batch_size % devices:
    below, above = batch_size // devices * devices, (batch_size // devices + 1) * devices
    options = " or ".join(str(b) for b in (below, above) if b)
    raise ValueError(f"{field}={batch_size} does not split over {devices} devices; "
                     f"use a multiple of {devices}, e.g. {options}.")


def device_prefetch(batches, sharding, size=2):
  """Turns host batches into global jax.Arrays, `size` batches ahead of the step.

  Each process passes its own slice; transfers are asynchronous, so batch
  n+1 is on its way to the devices while step n runs.
  """
  queue = collections.deque()

  def enqueue(n):
    for batch in itertools.islice(batches, n):
      queue.append(jax.tree.map(
          lambda x: jax.make_array_from_process_local_data(sharding, x), batch))

  enqueue(size)
  while queue:
    yield queue.popleft()
    enqueue(1)


def jit_step(step, mesh, num_frozen=0, **static):
  """jit over the mesh: state replicated and donated, batch sharded along 'data'.

  `num_frozen` trailing arguments (e.g. the frozen initial model) are
  replicated and passed as arguments, not baked into the program as constants.
  """
  state_sharding = replicated(mesh)
  return jax.jit(functools.partial(step, **static),
                 in_shardings=(state_sharding, data_sharded(mesh)) + (state_sharding,) * num_frozen,
                 out_shardings=state_sharding, donate_argnums=0)
