"""pix2pix (Isola et al., CVPR 2017): paired translation with one generator
and one conditional discriminator, no pool.

The train step, against the paper in the official order: the discriminator
first minimises 0.5 * (loss(D(x, y), 1) + loss(D(x, G(x)), 0)), then the
generator minimises loss(D(x, G(x)), 1) + lambda_L1 * |G(x) - y| through the
updated discriminator.

The interface every family module has is in families/__init__.py.
"""

import functools

import flax.struct
from flax.training import train_state
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from cyclegan_jax import config_fields
from cyclegan_jax import generation
from cyclegan_jax import losses
from cyclegan_jax import models
from cyclegan_jax.data import input_pipeline
from cyclegan_jax.data import paired_data
from cyclegan_jax.families import common

KIND = 'pix2pix'


@flax.struct.dataclass
class State:
  step: jax.Array  # int32 scalar: train steps done.
  gen: train_state.TrainState  # G: input -> output (config.data.direction).
  disc: train_state.TrainState  # D on the channel-concatenated (input, output) pair.
  rng: jax.Array  # Base key; step keys are fold_in(rng, step).


NETWORKS = ('gen', 'disc')
SHAPE_FIELDS = ('data.direction',)
SWEEPABLE = ('train.lambda_l1',)
GATED = ()


def add_config_fields(config) -> None:
  """pix2pix's translation direction and L1 weight."""
  # AtoB translates the A images (left halves) into the B images, BtoA back.
  config.data.direction = 'AtoB'
  config.train.lambda_l1 = 100.0  # Weight of |G(x) - y|.


def check_fields(config) -> None:
  config_fields.at_least(config, 'train.lambda_l1', 0, kind='a number')


create_generators = common.single_generator
generator_channels = common.single_generator_channels


def domain_channels(config) -> dict[str, int]:
  """The input domain is read with input_nc channels, the target with
  output_nc (data.direction BtoA: B is the input)."""
  input_nc, output_nc = common.channels(config.model)
  if config.data.direction == 'BtoA':
    return {'A': output_nc, 'B': input_nc}
  return {'A': input_nc, 'B': output_nc}


def create_state(config, image_shape, num_devices: int, tx) -> State:
  del num_devices  # Nothing per device: no pool.
  key = jax.random.PRNGKey(config.seed)
  key, *init_keys = jax.random.split(key, 5)  # As CycleGAN's, so seeds mean the same.
  input_nc, output_nc = common.channels(config.model)
  network = functools.partial(common.network_state, image_shape=image_shape, tx=tx)
  # The discriminator judges input and output side by side, as the official
  # define_D(input_nc + output_nc).
  return State(step=jnp.zeros((), jnp.int32),
               gen=network(create_generators(config.model)['gen'], init_keys[0],
                           channels=input_nc),
               disc=network(models.create_discriminator(config.model), init_keys[2],
                            channels=input_nc + output_nc),
               rng=key)


def partition_specs(state: State):
  """Everything replicated over the `data` axis."""
  return jax.tree.map(lambda _: P(), state)


def local_step(state: State, batch, *, config, schedule):
  """The per-device program: `batch` holds this device's (A, B) pairs."""
  t = config.train
  real_in, real_out = paired_data.input_and_target(batch, config.data.direction)  # x, y
  key = common.step_key(state)

  def generate(params):  # One dropout mask for the whole step, as one forward pass.
    return state.gen.apply_fn({'params': params}, real_in, train=True, rngs={'dropout': key})

  def discriminate(params, output):  # D(x, output): the pair, channels side by side.
    return state.disc.apply_fn({'params': params}, jnp.concatenate([real_in, output], -1))

  fake_out = generate(state.gen.params)  # G(x)

  # --- Discriminator: real pairs against generated pairs (no gradient into G).
  def discriminator_loss(params):
    d = functools.partial(discriminate, params)
    loss = losses.discriminator_loss(d, real_out, jax.lax.stop_gradient(fake_out), t.gan_mode)
    if t.gan_mode == 'wgangp':  # As in the CycleGAN step (the official pix2pix has none).
      loss += t.lambda_gp * losses.gradient_penalty(
          d, real_out, jax.lax.stop_gradient(fake_out), jax.random.fold_in(key, 1))
    return loss

  d_loss, d_grads = jax.value_and_grad(discriminator_loss)(common.per_device(state.disc.params))
  disc = state.disc.apply_gradients(grads=jax.lax.pmean(d_grads, 'data'))

  # --- Generator: fool the updated discriminator, stay near the target in L1.
  def generator_loss(params):
    fake = generate(params)
    terms = {'gen/adversarial': losses.gan_loss(discriminate(disc.params, fake), True,
                                                t.gan_mode),
             'gen/l1': t.lambda_l1 * losses.l1(fake, real_out)}
    return sum(terms.values()), terms

  (_, g_terms), g_grads = jax.value_and_grad(generator_loss, has_aux=True)(
      common.per_device(state.gen.params))
  gen = state.gen.apply_gradients(grads=jax.lax.pmean(g_grads, 'data'))

  metrics = jax.lax.pmean({**g_terms, 'disc/loss': d_loss}, 'data')
  metrics['gen/total'] = sum(metrics[k] for k in g_terms)
  metrics['learning_rate'] = schedule(state.step)
  return state.replace(step=state.step + 1, gen=gen, disc=disc), metrics


def open_training_data(config, shard, channels):
  """(training pairs in batches, test pairs for the sample grids, a line
  describing the data)."""
  sources = paired_data.open_paired_sources(config.data, channels)
  batches = paired_data.PairedBatches(sources['train'], config.data, *shard, pixels=True)
  samples = paired_data.test_pairs(sources['test'], config.data, config.num_samples)
  return batches, samples, f'{len(sources["train"])} training pairs'


def sample_rows(generators, params, samples, config) -> list:
  """Rows of input | output | target."""
  inputs, targets = paired_data.input_and_target(samples, config.data.direction)
  outputs = common.one_by_one(
      lambda x: generation.generate(generators['gen'], params['gen'], x), inputs)
  return [common.grid_row(*images) for images in zip(inputs, outputs, targets)]


def network_for(config, direction: str | None) -> tuple[str, str]:
  """gen, for the one direction it was trained for (config.data.direction)."""
  trained = config.data.direction
  if direction not in (None, trained):
    raise ValueError(f'--direction={direction}: this pix2pix model was trained for '
                     f'{trained} only (config.data.direction)')
  return 'gen', trained


def directions(config) -> tuple[tuple[str, str], ...]:
  network, direction = network_for(config, None)
  return ((direction, network),)


def scored_images(config, num_images: int) -> dict:
  """{direction: (inputs, uint8 targets)} of the same test pairs."""
  data = config.data
  source = paired_data.open_paired_sources(data, domain_channels(config))['test']
  with common.one_size('test', data):
    pairs = paired_data.test_pairs(source, data, num_images or len(source))
  (direction, _), = directions(config)
  inputs, targets = (common.at_least_two(images, 'test', num_images)
                     for images in paired_data.input_and_target(pairs, direction))
  return {direction: (inputs, input_pipeline.to_uint8(targets))}


def results_tables(config, params, generators, num_test: int) -> list[common.ResultsTable]:
  """input | output | target of the first num_test test pairs (the official
  page's real_A | fake_B | real_B), in config.data.direction. Translated as
  --mode=translate does, one image per forward pass (generation.translate_image):
  batch norm normalises with the statistics of the batch it is given, at test
  time too, and the official test script runs batch 1."""
  network, direction = network_for(config, None)
  titles = (f'input ({direction[0]})', f'{direction} output', f'target ({direction[-1]})')
  test = paired_data.open_paired_sources(config.data, domain_channels(config))['test']
  rows = []
  for i in range(min(num_test, len(test))):
    pair = [input_pipeline.preprocess(image, config.data, None) for image in test[i]]
    x, y = paired_data.input_and_target(pair, direction)
    # Floats in [-1, 1] in and out (value range (-1, 1)): full precision.
    output = generation.translate_image(generators[network], params[network], x, (-1.0, 1.0))
    cells = [(f'test_{i:04d}_{kind}.png', image)
             for kind, image in (('input', x), ('output', output), ('target', y))]
    rows.append((common.row_label(test, i, direction), cells))
  return [common.ResultsTable(f'test: {len(rows)} pairs, {direction}', titles, rows)]


def check_config(config) -> None:
  """A known direction, and a folder of pairs (pix2pix reads no TFDS)."""
  config_fields.one_of(config, 'data.direction', paired_data.DIRECTIONS)
  config_fields.require(bool(config.data.image_dir), config, 'data.image_dir',
                        'a folder of paired images for pix2pix (train/ and test/ of '
                        'side-by-side AB images, or trainA/ trainB/ testA/ testB/ paired by '
                        'file name)')
