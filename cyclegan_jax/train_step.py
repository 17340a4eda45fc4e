"""One training step, data-parallel over the `data` mesh axis: the model
family's per-device program (families/<kind>.py: `local_step`, each read top
to bottom against its paper) under shard_map, under jit.
"""

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np

from cyclegan_jax import families
from cyclegan_jax import image_io
from cyclegan_jax import state as state_lib
from cyclegan_jax import sweeps


def make_train_step(config, mesh: jax.sharding.Mesh, abstract_state, steps_per_epoch: int):
  """Returns jit(shard_map(local_step over runs)): (state, batch, values) ->
  (state, metrics), every run of training (one, or a sweep's) in one program.

  The state and batch have a leading runs axis, sharded over the `runs` mesh
  axis (the batch: [-1, 1] floats, or 8-bit images as uint8 pixels, which
  pixels_to_unit maps); each run's step is its family's `local_step`, data-parallel over
  `data`. `values` ({field: (runs,) array}, sweep_values; {} for one run) are
  the swept hyperparameters: inside the step the config and learning-rate
  schedule a run reads are built from them (traced), so one program serves
  every run; the optimisers hold theirs in their state
  (state.HYPERPARAMETERS). Metrics come back per run: {name: (runs,) array}
  (docs/sweeps.md). The state is donated so its buffers are reused.
  """
  family = families.of_state(abstract_state)
  specs = state_lib.partition_specs(abstract_state)
  value_specs = {name: P('runs') for name in sweeps.traced_fields(config)}

  def run_step(state, batch, values):
    run_config = sweeps.with_values(config, values)
    schedule = state_lib.learning_rate_schedule(run_config.train, steps_per_epoch)
    batch = {domain: pixels_to_unit(images) for domain, images in batch.items()}
    return family.local_step(state, batch, config=run_config, schedule=schedule)

  step = jax.shard_map(
      _over_runs(run_step, sweep_step_form(config, mesh)), mesh=mesh,
      in_specs=(specs, P('runs', 'data'), value_specs), out_specs=(specs, P('runs')))
  # The new state in exactly the shardings the state came in, so that step 2
  # runs the program compiled for step 1.
  state_shardings = state_lib.shardings(mesh, abstract_state)
  return jax.jit(step, out_shardings=(state_shardings, jax.NamedSharding(mesh, P('runs'))),
                 donate_argnums=0)


# Each 8-bit value's [-1, 1] float, as the input pipeline maps it on the host
# (image_io.to_unit). A lookup keeps those exact bits: XLA computes
# x / 127.5 - 1 as x * (1 / 127.5) - 1, which is one float off for some x.
_UNIT_OF_PIXEL = image_io.to_unit(np.arange(256), 0, 255)


def pixels_to_unit(images: jax.Array) -> jax.Array:
  """A batch of uint8 pixels (the input pipeline sends 8-bit images so: a
  quarter of the bytes) -> [-1, 1] float32; floats pass through."""
  if images.dtype != jnp.uint8:
    return images
  return jnp.asarray(_UNIT_OF_PIXEL)[images]


def sweep_step_form(config, mesh: jax.sharding.Mesh) -> str:
  """How the runs a device holds execute: config.train.sweep_step, where
  'auto' is 'loop' on CPU or with one run per device (the very program of a
  run alone), and 'vmap' elsewhere."""
  form = config.train.sweep_step
  if form == 'auto':
    one_per_device = len(sweeps.runs(config)) <= mesh.shape['runs']
    return 'loop' if one_per_device or mesh.devices.flat[0].platform == 'cpu' else 'vmap'
  return form


def _over_runs(run_step, form: str):
  """run_step over the runs a device holds. 'vmap': one batched program for
  all, which is what fills an accelerator at batch 1. 'loop': one run after
  the other, each the very program it runs alone (so it rounds as it does
  alone), the CPU's form, where a batch-1 step already fills the cores."""
  if form == 'vmap':
    return jax.vmap(run_step)

  def one_after_the_other(*args):
    count = jax.tree.leaves(args[0])[0].shape[0]
    results = [run_step(*jax.tree.map(lambda x, i=i: x[i], args)) for i in range(count)]
    return jax.tree.map(lambda *x: jnp.stack(x), *results)
  return one_after_the_other


def sweep_values(config, mesh: jax.sharding.Mesh) -> dict:
  """{field: (runs,) float32 array over `runs`}: each run's values of the
  swept fields the step reads (sweeps.traced_fields)."""
  runs = sweeps.runs(config)
  sharding = jax.NamedSharding(mesh, P('runs'))
  return {name: jax.device_put(jnp.array([run.values[name] for run in runs], jnp.float32),
                               sharding)
          for name in sweeps.traced_fields(config)}
