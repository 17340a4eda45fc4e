"""Train states, their optimisers, learning-rate schedule and shardings. Each
model family's own State (what it holds, how it is created and sharded) is in
families/<kind>.py: CycleGAN's two generators, two discriminators and pools,
pix2pix's generator and conditional discriminator."""

import jax
from jax.sharding import NamedSharding
import optax

from cyclegan_jax import families

def network_names(state) -> tuple[str, ...]:
  """The TrainState fields of a state, generators first."""
  return families.of_state(state).NETWORKS


def schedule_steps(train_config, steps_per_epoch: int) -> tuple[int, int]:
  """(constant steps, decay steps) of the learning-rate schedule."""
  if train_config.num_steps > 0:
    constant = train_config.num_steps // 2
    return constant, train_config.num_steps - constant
  return (train_config.n_epochs * steps_per_epoch,
          train_config.n_epochs_decay * steps_per_epoch)


def learning_rate_schedule(train_config, steps_per_epoch: int) -> optax.Schedule:
  """Constant, then linear to zero.

  The official code multiplies the rate by 1 - max(0, e - n_epochs) /
  (n_epochs_decay + 1) once per epoch e; this decays the same line per step.
  """
  constant, decay = schedule_steps(train_config, steps_per_epoch)
  lr = train_config.lr
  return optax.join_schedules(
      [optax.constant_schedule(lr), optax.linear_schedule(lr, 0.0, max(decay, 1))], [constant])


def create_optimizer(train_config, schedule: optax.Schedule) -> optax.GradientTransformation:
  return optax.adam(schedule, b1=train_config.beta1, b2=train_config.beta2)


def create_state(config, image_shape, num_devices: int, schedule: optax.Schedule):
  """A fresh state of config.model.kind; `image_shape` is (H, W) of training
  images (or (H, W, C): channels come from config.model.input_nc/output_nc)."""
  tx = create_optimizer(config.train, schedule)
  return families.get(config).create_state(config, image_shape, num_devices, tx)


def partition_specs(state):
  """The state's PartitionSpecs over the `data` mesh axis (its family's)."""
  return families.of_state(state).partition_specs(state)


def shardings(mesh: jax.sharding.Mesh, state):
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), partition_specs(state))


def create_sharded_state(config, image_shape, mesh, schedule):
  """Creates the state directly in its shardings, on every host alike."""
  init = lambda: create_state(config, image_shape, mesh.size, schedule)
  abstract = jax.eval_shape(init)
  return jax.jit(init, out_shardings=shardings(mesh, abstract))()
