"""Train states, their optimisers, learning-rate schedule and shardings. Each
model family's own State (what it holds, how it is created and sharded) is in
families/<kind>.py: CycleGAN's two generators, two discriminators and pools,
pix2pix's generator and conditional discriminator."""

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
import numpy as np
import optax

from cyclegan_jax import checkpoints
from cyclegan_jax import families
from cyclegan_jax import image_pool
from cyclegan_jax import sweeps

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


def learning_rate_schedule(train_config, steps_per_epoch: int, lr=None) -> optax.Schedule:
  """Constant at `lr` (default train_config.lr), then linear to zero.

  The official code multiplies the rate by 1 - max(0, e - n_epochs) /
  (n_epochs_decay + 1) once per epoch e; this decays the same line per step.
  """
  constant, decay = schedule_steps(train_config, steps_per_epoch)
  lr = train_config.lr if lr is None else lr
  return optax.join_schedules(
      [optax.constant_schedule(lr), optax.linear_schedule(lr, 0.0, max(decay, 1))], [constant])


# The optimiser's hyperparameters, by the config.train fields they come from.
# Those that a sweep's runs differ in are held in the optimiser's state
# (optax.inject_hyperparams: arrays with a runs axis, kept by any optax
# wrapper), so that one program serves every run; the others are constants
# of the program, as they are for a run alone, so that a run computes and
# rounds in a sweep exactly as alone (XLA fuses arithmetic on a constant
# otherwise than on an array).
HYPERPARAMETERS = {'learning_rate': 'lr', 'b1': 'beta1', 'b2': 'beta2'}


def hyperparameters_in_state(run_configs) -> tuple[str, ...]:
  """The HYPERPARAMETERS whose values differ between the runs."""
  return tuple(name for name, field in HYPERPARAMETERS.items()
               if len({c.train[field] for c in run_configs}) > 1)


def create_optimizer(train_config, steps_per_epoch: int,
                     in_state: tuple[str, ...] = ()) -> optax.GradientTransformation:
  """Adam on the learning-rate schedule; the HYPERPARAMETERS named in
  `in_state` held in its state, the others constants."""
  def adam(learning_rate, b1, b2):
    schedule = learning_rate_schedule(train_config, steps_per_epoch, learning_rate)
    return optax.adam(schedule, b1=b1, b2=b2)
  constants = [name for name in HYPERPARAMETERS if name not in in_state]
  return optax.inject_hyperparams(adam, static_args=constants, hyperparam_dtype=jnp.float32)(
      **{name: train_config[field] for name, field in HYPERPARAMETERS.items()})


def create_state(config, image_shape, num_devices: int, steps_per_epoch: int,
                 in_state: tuple[str, ...] = ()):
  """A fresh state of config.model.kind; `image_shape` is (H, W) of training
  images (or (H, W, C): channels come from config.model.input_nc/output_nc);
  `in_state`: the optimiser hyperparameters held in its state."""
  tx = create_optimizer(config.train, steps_per_epoch, in_state)
  return families.get(config).create_state(config, image_shape, num_devices, tx)


def with_hyperparameters(state, values: dict):
  """`state` with every optimiser's hyperparameters {name: value} set."""
  def put(opt_state):
    return opt_state._replace(hyperparams={**opt_state.hyperparams, **{
        name: jnp.asarray(value, opt_state.hyperparams[name].dtype)
        for name, value in values.items()}})
  return jax.tree.map(lambda x: put(x) if checkpoints.is_optimizer_state(x) else x, state,
                      is_leaf=checkpoints.is_optimizer_state)


def hyperparameters_of(fresh, state):
  """`state` with the optimisers' hyperparameters of `fresh` (a state just
  created from the config): a resumed run takes config.train.lr and the
  betas as the config says now, as it always has."""
  is_optimizer_state = checkpoints.is_optimizer_state
  return jax.tree.map(
      lambda new, old: old._replace(hyperparams=new.hyperparams) if is_optimizer_state(new)
      else old, fresh, state, is_leaf=is_optimizer_state)


# The state training holds: every leaf of a family's State with a leading
# `runs` axis (one run: 1), sharded over the `runs` mesh axis, the family's
# own partition over `data` after it (docs/sweeps.md).

def partition_specs(state):
  """The PartitionSpecs of a state with a runs axis: `runs` first, then the
  family's own (the pools also over `data`)."""
  own = families.of_state(state).partition_specs(state)
  return jax.tree.map(lambda spec: jax.P('runs', *spec), own)


def shardings(mesh: jax.sharding.Mesh, state):
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), partition_specs(state))


def create_sharded_state(run_configs, image_shape, mesh, steps_per_epoch: int):
  """The runs' fresh states stacked on a leading axis, each the state its
  run would start from alone on mesh.shape['data'] devices: the initial
  weights and keys come from each run's seed, the optimisers'
  hyperparameters that differ between the runs from its config (vmapped),
  directly in their shardings, on every host alike."""
  config = run_configs[0]
  seeds = jnp.array([c.seed for c in run_configs], jnp.int32)
  in_state = hyperparameters_in_state(run_configs)
  values = {name: jnp.array([c.train[HYPERPARAMETERS[name]] for c in run_configs], jnp.float32)
            for name in in_state}

  def init(seeds, values):
    def one(seed, values):
      with_seed = sweeps.with_values(config, {'seed': seed})
      state = create_state(with_seed, image_shape, mesh.shape['data'], steps_per_epoch,
                           in_state)
      return with_hyperparameters(state, values)
    return jax.vmap(one)(seeds, values)

  abstract = jax.eval_shape(init, seeds, values)
  return jax.jit(init, out_shardings=shardings(mesh, abstract))(seeds, values)


# The jitted re-layouts of a state, by (mesh, tree structure, direction):
# compiled once, the state donated (a unit axis added or dropped aliases the
# buffers, so no second copy of the state is made).
_RELAYOUTS = {}


def _relayout(state, mesh: jax.sharding.Mesh, drop: bool):
  key = (mesh, jax.tree.structure(state), drop)
  if key not in _RELAYOUTS:
    family = families.of_state(state)
    if drop:
      one = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), state)
      specs, fn = family.partition_specs(one), lambda s: jax.tree.map(lambda x: x[0], s)
    else:
      specs = jax.tree.map(lambda spec: jax.P('runs', *spec), family.partition_specs(state))
      fn = lambda s: jax.tree.map(lambda x: x[None], s)
    out = jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs)
    _RELAYOUTS[key] = jax.jit(fn, out_shardings=out, donate_argnums=0)
  return _RELAYOUTS[key](state)


def without_runs_axis(state, mesh: jax.sharding.Mesh):
  """A state of one run without its runs axis, in the family's own
  shardings: how a plain run's checkpoints hold it. `state` is donated."""
  return _relayout(state, mesh, drop=True)


def with_runs_axis(state, mesh: jax.sharding.Mesh):
  """without_runs_axis undone: the runs axis (of 1) put back. `state` is
  donated."""
  return _relayout(state, mesh, drop=False)


def relay_per_device(restored, state):
  """(state, one line saying what changed): a checkpoint `restored` into
  `state`'s structure by checkpoints.restore_latest, whose history pools were
  saved for another device count (as numpy, at their saved shapes), with
  each run's pools re-laid for `state`'s devices (image_pool.relay) in
  `state`'s shardings. Everything else was resharded by Orbax already; any
  other per-device array is refused in one line."""
  is_pool = lambda x: isinstance(x, image_pool.ImagePool)
  counts = []

  def place(new, like):
    return jax.make_array_from_callback(like.shape, like.sharding, lambda index: new[index])

  def one(path, saved, wanted):
    if not is_pool(saved):
      if np.shape(saved) != np.shape(wanted):
        raise checkpoints.CheckpointError(
            f'{jax.tree_util.keystr(path)}: an array laid out per device, saved for '
            f'{np.shape(saved)} and wanted as {np.shape(wanted)}; only the history pools can '
            'be laid out for another device count')
      return saved
    if np.shape(saved.num_stored) == np.shape(wanted.num_stored):
      return saved
    stored = np.asarray(saved.num_stored)  # (..., old devices): a sweep has runs first.
    devices = wanted.num_stored.shape[-1]
    images, numbers = [], []
    for index in np.ndindex(stored.shape[:-1]):
      new_images, new_stored = image_pool.relay(
          None if saved.images is None else np.asarray(saved.images)[index], stored[index],
          devices)
      images.append(new_images)
      numbers.append(new_stored)
    counts.append((stored.shape[-1], devices, int(stored.sum()), int(sum(n.sum() for n in numbers)),
                   stored.size, len(numbers) * devices, stored.ndim > 1,
                   None if saved.images is None else saved.images.shape[-4]))
    numbers = np.stack(numbers).reshape(wanted.num_stored.shape)
    if saved.images is None:
      return image_pool.ImagePool(images=None, num_stored=place(numbers, wanted.num_stored))
    images = np.stack(images).reshape(wanted.images.shape)
    return image_pool.ImagePool(images=place(images, wanted.images),
                                num_stored=place(numbers, wanted.num_stored))

  state = jax.tree_util.tree_map_with_path(one, restored, state, is_leaf=is_pool)
  if not counts:
    return state, ''
  old, new, _, _, _, _, sweep, size = counts[0]
  stored, kept = sum(c[2] for c in counts), sum(c[3] for c in counts)
  pools_before, pools_now = sum(c[4] for c in counts), sum(c[5] for c in counts)
  line = (f'The checkpoint was trained on {old} device(s){" per run" if sweep else ""}, now on '
          f'{new}: parameters and optimiser state resharded; ')
  line += (f'the {stored} images stored in {pools_before} history pools dealt in turn to '
           f'{pools_now} pools of {size}, {kept} kept (docs/training.md).'
           if size else 'the history pools are off.')
  return state, line
