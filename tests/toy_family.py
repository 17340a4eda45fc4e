"""A toy model family, written outside the library as a plug-in would be:
one generator G: A -> B trained to minimise toy_weight * |G(a) - b| on
unpaired images (a regression with no adversary, so it learns little; it
exists to show that a family with its own state, step and config field
trains, resumes, translates and fills the results page with no change to
the library). tests/test_families.py registers it."""

import flax.struct
from flax.training import train_state
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from cyclegan_jax import config_fields
from cyclegan_jax import generation
from cyclegan_jax import losses
from cyclegan_jax.data import input_pipeline
from cyclegan_jax.families import common

KIND = 'toy'


@flax.struct.dataclass
class State:
  step: jax.Array
  gen: train_state.TrainState
  rng: jax.Array


NETWORKS = ('gen',)
SHAPE_FIELDS = ()
SWEEPABLE = ()
GATED = ()


def add_config_fields(config) -> None:
  config.train.toy_weight = 1.0  # Weight of |G(a) - b|.


def check_fields(config) -> None:
  config_fields.at_least(config, 'train.toy_weight', 0, kind='a number')


def check_config(config) -> None:
  config_fields.require(bool(config.data.image_dir), config, 'data.image_dir',
                        'a folder of images for the toy family')


create_generators = common.single_generator
generator_channels = common.single_generator_channels
domain_channels = common.a_to_b_channels


def create_state(config, image_shape, num_devices: int, tx) -> State:
  del num_devices
  key, init_key = jax.random.split(jax.random.PRNGKey(config.seed))
  gen = common.network_state(create_generators(config.model)['gen'], init_key, image_shape,
                             config.model.input_nc, tx)
  return State(step=jnp.zeros((), jnp.int32), gen=gen, rng=key)


def partition_specs(state: State):
  return jax.tree.map(lambda _: P(), state)


def local_step(state: State, batch, *, config, schedule):
  key = common.step_key(state)

  def loss(params):
    fake = state.gen.apply_fn({'params': params}, batch['A'], train=True,
                              rngs={'dropout': key})
    return config.train.toy_weight * losses.l1(fake, batch['B'])

  value, grads = jax.value_and_grad(loss)(common.per_device(state.gen.params))
  gen = state.gen.apply_gradients(grads=jax.lax.pmean(grads, 'data'))
  metrics = jax.lax.pmean({'gen/l1': value}, 'data')
  metrics['gen/total'] = metrics['gen/l1']
  metrics['learning_rate'] = schedule(state.step)
  return state.replace(step=state.step + 1, gen=gen), metrics


open_training_data = common.open_unpaired_training_data


def sample_rows(generators, params, samples, config) -> list:
  del config
  fake = common.one_by_one(
      lambda x: generation.generate(generators['gen'], params['gen'], x), samples['A'])
  return [common.grid_row(*images) for images in zip(samples['A'], fake)]


def directions(config) -> tuple[tuple[str, str], ...]:
  del config
  return (('AtoB', 'gen'),)


def network_for(config, direction: str | None) -> tuple[str, str]:
  del config
  if direction not in (None, 'AtoB'):
    raise ValueError(f'--direction={direction}: the toy family translates AtoB only')
  return 'gen', 'AtoB'


def scored_images(config, num_images: int) -> dict:
  real = common.unpaired_test_images(config, domain_channels(config), num_images)
  return {'AtoB': (real['A'], input_pipeline.to_uint8(real['B']))}


def results_tables(config, params, generators, num_test: int) -> list:
  source = input_pipeline.open_sources(config.data, domain_channels(config))['testA']
  rows = []
  for i in range(min(num_test, len(source))):
    real = input_pipeline.preprocess(source[i], config.data, None)
    fake = generation.generate(generators['gen'], params['gen'], real[None])
    rows.append((common.row_label(source, i),
                 [(f'toy_{i:04d}_real.png', real), (f'toy_{i:04d}_fake.png', fake[0])]))
  return [common.ResultsTable(f'toy: {len(rows)} images', ('real A', 'A→B'), rows)]
