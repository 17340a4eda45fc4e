"""One real train step of one run, for the tests that compare it with a
written-out reference step (tests/test_pix2pix.py, tests/test_cut.py)."""

import jax
import numpy as np

from cyclegan_jax import state as state_lib
from cyclegan_jax import train_step as train_step_lib


def first_step(config, batch: dict, image_shape):
  """(initial state, state after one step, metrics as floats) of the train
  step of one run of `config` on every device, without the runs axis."""
  mesh = jax.make_mesh((1, jax.device_count()), ('runs', 'data'))
  state = state_lib.create_sharded_state([config], image_shape, mesh, steps_per_epoch=1000)
  one_run = lambda tree: jax.tree.map(lambda x: np.asarray(x)[0], tree)
  initial = one_run(state)  # The step donates `state`.
  step = train_step_lib.make_train_step(config, mesh, state, steps_per_epoch=1000)
  sharding = jax.NamedSharding(mesh, jax.P('runs', 'data'))
  new_state, metrics = step(state, {k: jax.device_put(v[None], sharding)
                                    for k, v in batch.items()}, {})
  return initial, one_run(new_state), {k: float(v) for k, v in one_run(metrics).items()}
