"""One training step, data-parallel over the `data` mesh axis: the model
family's per-device program (families/<kind>.py: `local_step`, each read top
to bottom against its paper) under shard_map, under jit.
"""

import functools

import jax
from jax.sharding import PartitionSpec as P

from cyclegan_jax import families
from cyclegan_jax import state as state_lib


def make_train_step(config, mesh: jax.sharding.Mesh, abstract_state, schedule):
  """Returns jit(shard_map(local_step)): (state, batch) -> (state, metrics).

  `batch` is {'A': images, 'B': images}, global arrays sharded over `data`.
  The state is donated so its buffers are reused.
  """
  specs = state_lib.partition_specs(abstract_state)
  local_step = families.of_state(abstract_state).local_step
  step = jax.shard_map(
      functools.partial(local_step, config=config, schedule=schedule),
      mesh=mesh, in_specs=(specs, P('data')), out_specs=(specs, P()))
  # The new state in exactly the shardings the state came in (shard_map would
  # spell them P(None, ...), which the jit cache does not match with P()), so
  # that step 2 runs the program compiled for step 1.
  state_shardings = state_lib.shardings(mesh, abstract_state)
  return jax.jit(step, out_shardings=(state_shardings, jax.NamedSharding(mesh, P())),
                 donate_argnums=0)
