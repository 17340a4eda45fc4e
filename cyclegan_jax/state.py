"""Train states: CycleGAN's (both generators, both discriminators with their
Optax optimisers, both image-history pools, the step and the base RNG key) and
pix2pix's (one generator, one conditional discriminator, no pool)."""

from typing import Callable

import flax.struct
from flax.training import train_state
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import optax

from cyclegan_jax import image_pool
from cyclegan_jax import models


@flax.struct.dataclass
class CycleGANState:
  step: jax.Array  # int32 scalar: train steps done.
  gen_ab: train_state.TrainState  # G: A -> B (official G_A).
  gen_ba: train_state.TrainState  # F: B -> A (official G_B).
  disc_a: train_state.TrainState  # D_A of the paper: real A vs F(B) (official D_B).
  disc_b: train_state.TrainState  # D_B of the paper: real B vs G(A) (official D_A).
  pool_fake_a: image_pool.ImagePool  # History of F(B), one pool per device.
  pool_fake_b: image_pool.ImagePool  # History of G(A), one pool per device.
  rng: jax.Array  # Base key; step keys are fold_in(rng, step).


@flax.struct.dataclass
class Pix2PixState:
  step: jax.Array  # int32 scalar: train steps done.
  gen: train_state.TrainState  # G: input -> output (config.data.direction).
  disc: train_state.TrainState  # D on the channel-concatenated (input, output) pair.
  rng: jax.Array  # Base key; step keys are fold_in(rng, step).


def network_names(state) -> tuple[str, ...]:
  """The TrainState fields of a state, generators first."""
  if isinstance(state, Pix2PixState):
    return ('gen', 'disc')
  return ('gen_ab', 'gen_ba', 'disc_a', 'disc_b')


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
  generators = models.create_generators(config.model)
  discriminator = models.create_discriminator(config.model)
  tx = create_optimizer(config.train, schedule)
  key = jax.random.PRNGKey(config.seed)
  key, *init_keys = jax.random.split(key, 5)
  height, width = image_shape[:2]
  input_nc, output_nc = config.model.get('input_nc', 3), config.model.get('output_nc', 3)

  def network(module, init_key, input_channels):
    dummy = jnp.zeros((1, height, width, input_channels), jnp.float32)
    params = module.init(init_key, dummy)['params']
    return train_state.TrainState.create(apply_fn=module.apply, params=params, tx=tx)

  if config.model.get('kind', 'cyclegan') == 'pix2pix':
    # The discriminator judges input and output side by side, as the official
    # define_D(input_nc + output_nc).
    return Pix2PixState(step=jnp.zeros((), jnp.int32),
                        gen=network(generators['gen'], init_keys[0], input_nc),
                        disc=network(discriminator, init_keys[2], input_nc + output_nc),
                        rng=key)

  def pools(channels):
    pool = image_pool.create(config.train.pool_size, (height, width, channels))
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_devices, *x.shape)), pool)

  # Domain A has input_nc channels, B output_nc; each discriminator judges its own.
  return CycleGANState(
      step=jnp.zeros((), jnp.int32),
      gen_ab=network(generators['gen_ab'], init_keys[0], input_nc),
      gen_ba=network(generators['gen_ba'], init_keys[1], output_nc),
      disc_a=network(discriminator, init_keys[2], input_nc),
      disc_b=network(discriminator, init_keys[3], output_nc),
      pool_fake_a=pools(input_nc),
      pool_fake_b=pools(output_nc),
      rng=key)


def partition_specs(state):
  """Everything replicated over the `data` axis except the per-device pools."""
  specs = jax.tree.map(lambda _: P(), state)
  if isinstance(state, Pix2PixState):
    return specs
  per_device = lambda pool: jax.tree.map(lambda _: P('data'), pool)
  return specs.replace(pool_fake_a=per_device(state.pool_fake_a),
                       pool_fake_b=per_device(state.pool_fake_b))


def shardings(mesh: jax.sharding.Mesh, state):
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), partition_specs(state))


def create_sharded_state(config, image_shape, mesh, schedule):
  """Creates the state directly in its shardings, on every host alike."""
  init = lambda: create_state(config, image_shape, mesh.size, schedule)
  abstract = jax.eval_shape(init)
  return jax.jit(init, out_shardings=shardings(mesh, abstract))()
