"""Joining a multi-process run: TPU pod slices, SLURM, Open MPI, or explicit flags.

Every process runs the same command; `jax.distributed.initialize` connects
them, after which `jax.devices()` lists the devices of all processes and the
train step's mesh spans them all.
"""

import os

from absl import logging
import jax

# Launchers that start one process per host (or per GPU) and say how many.
_PROCESS_COUNT_VARIABLES = ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE')


def launched_as_several_processes() -> bool:
  for name in _PROCESS_COUNT_VARIABLES:
    try:
      if int(os.environ.get(name, '1')) > 1:
        return True
    except ValueError:
      pass
  return False


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, force: bool = False) -> None:
  """Calls `jax.distributed.initialize` when this is one of several processes.

  Explicit arguments are passed on (all three are needed together); `force`
  (a TPU pod slice, where every worker runs the command) or a SLURM / Open MPI
  launch with several tasks lets JAX find the cluster itself. A single process
  with none of these is left alone.
  """
  explicit = (coordinator_address, num_processes, process_id)
  if any(x is not None for x in explicit):
    if any(x is None for x in explicit):
      raise ValueError('--coordinator_address, --num_processes and --process_id go together; '
                       f'got {coordinator_address!r}, {num_processes!r}, {process_id!r}')
    if not 0 <= process_id < num_processes:
      raise ValueError(f'--process_id={process_id}: expected 0 to {num_processes - 1}')
  elif not (force or launched_as_several_processes()):
    return
  # CPU devices of several processes talk through gloo; GPUs and TPUs ignore this.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address, num_processes, process_id)
  logging.info('Process %d of %d; %d local and %d global devices.', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
