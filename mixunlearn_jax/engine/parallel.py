"""Data parallelism: one ('data',) mesh, batches sharded, state replicated."""

import collections
import functools
import itertools
import os

from absl import logging
import jax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np


# A job on any machines: all three are needed, as JAX itself reads only the address.
EXPLICIT = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
# Environments whose description jax.distributed.initialize() reads by itself.
AUTO_DETECTED = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES")


def maybe_initialize_distributed(environ=os.environ):
  """Joins a multi-process job when the environment describes one.

  JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID describe a
  job anywhere (launch/multihost.sh); SLURM, Open MPI and Cloud TPU are
  auto-detected by jax.distributed.initialize(), which also takes the address
  alone there. An incomplete description is an error naming what is missing,
  raised before any process waits at the coordinator.
  """
  if jax.distributed.is_initialized():
    return
  given = {name: environ[name] for name in EXPLICIT if environ.get(name)}
  auto = any(environ.get(name) for name in AUTO_DETECTED)
  if len(given) == len(EXPLICIT):
    jax.distributed.initialize(given["JAX_COORDINATOR_ADDRESS"],
                               _integer(given, "JAX_NUM_PROCESSES"),
                               _integer(given, "JAX_PROCESS_ID"))
  elif given and not (auto and list(given) == ["JAX_COORDINATOR_ADDRESS"]):
    missing = ", ".join(name for name in EXPLICIT if name not in given)
    raise ValueError(f"The environment describes a multi-process job only in part: "
                     f"{', '.join(given)} set, {missing} missing. Set all of {', '.join(EXPLICIT)} "
                     "(launch/multihost.sh does), or none.")
  elif auto:
    jax.distributed.initialize()
  else:
    return
  # On CPU, cross-process collectives (gloo) connect on first use and give up
  # when the processes arrive more than 30 s apart (one compiling, another
  # loading its program from a cache); right after initialize they are in step.
  multihost_utils.sync_global_devices("processes joined")
  logging.info("Process %d of %d joined the job: %d of %d devices are local.",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


def _integer(environ, name):
  try:
    return int(environ[name])
  except ValueError:
    raise ValueError(f"{name}={environ[name]!r} is not an integer.") from None


def make_mesh():
  """All devices on one ('data',) axis, each process's devices a block in process order.

  Process p feeds the p-th block of every global batch (pipeline._local) and
  reads evaluation outputs in global order, so its devices must hold that
  block; the stable sort keeps make_mesh's order otherwise (a no-op in one process).
  """
  devices = jax.make_mesh((jax.device_count(),), ("data",)).devices.flat
  return jax.sharding.Mesh(np.array(sorted(devices, key=lambda d: d.process_index)), ("data",),
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


def host_value(tree):
  """Every array of `tree` whole, as numpy, in every process.

  A global array spans other processes' devices, which no process can read
  alone; process_allgather assembles it (a collective: all processes call it).
  """
  return multihost_utils.process_allgather(tree, tiled=True)
