"""CycleGAN (Zhu et al., ICCV 2017): unpaired translation with two generators,
G: A -> B (gen_ab) and F: B -> A (gen_ba), two discriminators and two
image-history pools.

The train step, read top to bottom against the paper: the generators minimise
  L_GAN(G, D_B) + L_GAN(F, D_A) + lambda_cyc * (|F(G(a)) - a| + |G(F(b)) - b|)
    + lambda_id * lambda_cyc * (|G(b) - b| + |F(a) - a|),
then each discriminator minimises 0.5 * (loss(D(real), 1) + loss(D(pooled fake), 0)).

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
from cyclegan_jax import image_pool
from cyclegan_jax import losses
from cyclegan_jax import models
from cyclegan_jax.data import input_pipeline
from cyclegan_jax.families import common

KIND = 'cyclegan'


@flax.struct.dataclass
class State:
  step: jax.Array  # int32 scalar: train steps done.
  gen_ab: train_state.TrainState  # G: A -> B (official G_A).
  gen_ba: train_state.TrainState  # F: B -> A (official G_B).
  disc_a: train_state.TrainState  # D_A of the paper: real A vs F(B) (official D_B).
  disc_b: train_state.TrainState  # D_B of the paper: real B vs G(A) (official D_A).
  pool_fake_a: image_pool.ImagePool  # History of F(B), one pool per device.
  pool_fake_b: image_pool.ImagePool  # History of G(A), one pool per device.
  rng: jax.Array  # Base key; step keys are fold_in(rng, step).


NETWORKS = ('gen_ab', 'gen_ba', 'disc_a', 'disc_b')
SHAPE_FIELDS = ('train.pool_size',)
SWEEPABLE = ('train.lambda_cycle', 'train.lambda_identity')
GATED = ('train.lambda_identity',)


def add_config_fields(config) -> None:
  """CycleGAN's loss weights and history pool."""
  config.train.lambda_cycle = 10.0  # lambda_A = lambda_B in the official code.
  config.train.lambda_identity = 0.5  # Identity loss = lambda_identity * lambda_cycle * L1.
  config.train.pool_size = 50  # Per device; 0 turns the history pool off.


def check_fields(config) -> None:
  for name in ('train.lambda_cycle', 'train.lambda_identity'):
    config_fields.at_least(config, name, 0, kind='a number')
  config_fields.at_least(config, 'train.pool_size', 0)

# (direction, generator there, generator back, domain translated, domain of
# the result): A->B is scored against the real B images, B->A against the A's.
DIRECTIONS = (('AtoB', 'gen_ab', 'gen_ba', 'A', 'B'), ('BtoA', 'gen_ba', 'gen_ab', 'B', 'A'))
# The results page's columns, as the official real_A | fake_B | rec_A.
RESULTS_TITLES = {'AtoB': ('real A', 'A→B', 'A→B→A'), 'BtoA': ('real B', 'B→A', 'B→A→B')}


def create_generators(model_config) -> dict:
  """gen_ab (A: input_nc channels -> B: output_nc) and gen_ba (back), as the
  official define_G calls."""
  input_nc, _ = common.channels(model_config)
  return {'gen_ab': models.create_generator(model_config),
          'gen_ba': models.create_generator(model_config, input_nc)}


def generator_channels(model_config, network: str) -> tuple[int, int]:
  input_nc, output_nc = common.channels(model_config)
  return (output_nc, input_nc) if network == 'gen_ba' else (input_nc, output_nc)


domain_channels = common.a_to_b_channels


def create_state(config, image_shape, num_devices: int, tx) -> State:
  generators = create_generators(config.model)
  discriminator = models.create_discriminator(config.model)
  key = jax.random.PRNGKey(config.seed)
  key, *init_keys = jax.random.split(key, 5)
  input_nc, output_nc = common.channels(config.model)
  network = functools.partial(common.network_state, image_shape=image_shape, tx=tx)

  def pools(channels):
    pool = image_pool.create(config.train.pool_size, (*image_shape[:2], channels))
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_devices, *x.shape)), pool)

  # Domain A has input_nc channels, B output_nc; each discriminator judges its own.
  return State(
      step=jnp.zeros((), jnp.int32),
      gen_ab=network(generators['gen_ab'], init_keys[0], channels=input_nc),
      gen_ba=network(generators['gen_ba'], init_keys[1], channels=output_nc),
      disc_a=network(discriminator, init_keys[2], channels=input_nc),
      disc_b=network(discriminator, init_keys[3], channels=output_nc),
      pool_fake_a=pools(input_nc),
      pool_fake_b=pools(output_nc),
      rng=key)


def partition_specs(state: State):
  """Everything replicated over the `data` axis except the per-device pools."""
  specs = jax.tree.map(lambda _: P(), state)
  per_device = lambda pool: jax.tree.map(lambda _: P('data'), pool)
  return specs.replace(pool_fake_a=per_device(state.pool_fake_a),
                       pool_fake_b=per_device(state.pool_fake_b))


def local_step(state: State, batch, *, config, schedule):
  """The per-device program: `batch` holds this device's images."""
  t = config.train
  real_a, real_b = batch['A'], batch['B']
  key = common.step_key(state)
  k_dropout, k_pool_a, k_pool_b, k_gp_a, k_gp_b = jax.random.split(key, 5)

  def generate(net, params, x):
    return net.apply_fn({'params': params}, x, train=True, rngs={'dropout': k_dropout})

  def discriminate(net, params, x):
    return net.apply_fn({'params': params}, x)

  # --- Generators: adversarial through the frozen discriminators, cycle, identity.
  def generator_loss(gen_params):
    p_ab, p_ba = gen_params
    fake_b = generate(state.gen_ab, p_ab, real_a)  # G(a)
    fake_a = generate(state.gen_ba, p_ba, real_b)  # F(b)
    terms = {
        'gen_ab/adversarial': losses.gan_loss(
            discriminate(state.disc_b, state.disc_b.params, fake_b), True, t.gan_mode),
        'gen_ba/adversarial': losses.gan_loss(
            discriminate(state.disc_a, state.disc_a.params, fake_a), True, t.gan_mode),
        'cycle/aba': t.lambda_cycle * losses.l1(generate(state.gen_ba, p_ba, fake_b), real_a),
        'cycle/bab': t.lambda_cycle * losses.l1(generate(state.gen_ab, p_ab, fake_a), real_b),
    }
    if common.enabled(t.lambda_identity):
      weight = t.lambda_identity * t.lambda_cycle
      terms['identity/ab'] = weight * losses.l1(generate(state.gen_ab, p_ab, real_b), real_b)
      terms['identity/ba'] = weight * losses.l1(generate(state.gen_ba, p_ba, real_a), real_a)
    return sum(terms.values()), (fake_a, fake_b, terms)

  gen_params = common.per_device((state.gen_ab.params, state.gen_ba.params))
  (_, (fake_a, fake_b, g_terms)), g_grads = jax.value_and_grad(
      generator_loss, has_aux=True)(gen_params)
  g_grads = jax.lax.pmean(g_grads, 'data')
  gen_ab = state.gen_ab.apply_gradients(grads=g_grads[0])
  gen_ba = state.gen_ba.apply_gradients(grads=g_grads[1])

  # --- History pools: the discriminators see past fakes too (no gradient).
  squeeze = lambda pool: jax.tree.map(lambda x: x[0], pool)
  unsqueeze = lambda pool: jax.tree.map(lambda x: x[None], pool)
  pool_a, pooled_fake_a = image_pool.query(
      squeeze(state.pool_fake_a), jax.lax.stop_gradient(fake_a), k_pool_a)
  pool_b, pooled_fake_b = image_pool.query(
      squeeze(state.pool_fake_b), jax.lax.stop_gradient(fake_b), k_pool_b)

  # --- Discriminators.
  def discriminator_loss(disc_params):
    p_a, p_b = disc_params
    d_a = functools.partial(discriminate, state.disc_a, p_a)
    d_b = functools.partial(discriminate, state.disc_b, p_b)
    terms = {
        'disc_a/loss': losses.discriminator_loss(d_a, real_a, pooled_fake_a, t.gan_mode),
        'disc_b/loss': losses.discriminator_loss(d_b, real_b, pooled_fake_b, t.gan_mode),
    }
    if t.gan_mode == 'wgangp':
      terms['disc_a/gradient_penalty'] = t.lambda_gp * losses.gradient_penalty(
          d_a, real_a, pooled_fake_a, k_gp_a)
      terms['disc_b/gradient_penalty'] = t.lambda_gp * losses.gradient_penalty(
          d_b, real_b, pooled_fake_b, k_gp_b)
    return sum(terms.values()), terms

  disc_params = common.per_device((state.disc_a.params, state.disc_b.params))
  (_, d_terms), d_grads = jax.value_and_grad(discriminator_loss, has_aux=True)(disc_params)
  d_grads = jax.lax.pmean(d_grads, 'data')
  disc_a = state.disc_a.apply_gradients(grads=d_grads[0])
  disc_b = state.disc_b.apply_gradients(grads=d_grads[1])

  metrics = jax.lax.pmean({**g_terms, **d_terms}, 'data')
  metrics['gen/total'] = sum(metrics[k] for k in g_terms)
  metrics['learning_rate'] = schedule(state.step)
  new_state = state.replace(
      step=state.step + 1, gen_ab=gen_ab, gen_ba=gen_ba, disc_a=disc_a, disc_b=disc_b,
      pool_fake_a=unsqueeze(pool_a), pool_fake_b=unsqueeze(pool_b))
  return new_state, metrics


open_training_data = common.open_unpaired_training_data


def sample_rows(generators, params, samples, config) -> list:
  """Rows of real | translated | reconstructed, for the A then the B images."""
  del config
  rows = []
  for _, there, back, domain, _ in DIRECTIONS:
    fake, rec = common.one_by_one(
        lambda x, t=there, b=back: generation.translate_and_back(
            generators[t], generators[b], params[t], params[b],
            x), samples[domain])
    rows += [common.grid_row(*images) for images in zip(samples[domain], fake, rec)]
  return rows


def directions(config) -> tuple[tuple[str, str], ...]:
  del config
  return tuple((direction, there) for direction, there, _, _, _ in DIRECTIONS)


def network_for(config, direction: str | None) -> tuple[str, str]:
  del config
  direction = direction or 'AtoB'
  for name, there, _, _, _ in DIRECTIONS:
    if name == direction:
      return there, direction
  raise ValueError(f'--direction={direction!r}: expected AtoB or BtoA')


def scored_images(config, num_images: int) -> dict:
  """{direction: (test images to translate, uint8 real test images of the
  other domain)}: AtoB (test A, test B), BtoA (test B, test A)."""
  real = common.unpaired_test_images(config, domain_channels(config), num_images)
  real_uint8 = {domain: input_pipeline.to_uint8(images) for domain, images in real.items()}
  return {name: (real[source], real_uint8[target])
          for name, _, _, source, target in DIRECTIONS}


def results_tables(config, params, generators, num_test: int) -> list[common.ResultsTable]:
  """The official page's real_A | fake_B | rec_A and real_B | fake_A | rec_B
  tables, of the first num_test test images of each domain."""
  sources = input_pipeline.open_sources(config.data, domain_channels(config))
  tables = []
  for name, there, back, domain, _ in DIRECTIONS:
    split = 'test' + domain
    source = sources[split]
    rows = []
    for i in range(min(num_test, len(source))):
      real = input_pipeline.preprocess(source[i], config.data, None)
      fake, rec = generation.translate_and_back(generators[there], generators[back],
                                                params[there], params[back], real[None])
      cells = [(f'{split}_{i:04d}_{kind}.png', image)
               for kind, image in (('real', real), ('fake', fake[0]), ('rec', rec[0]))]
      rows.append((common.row_label(source, i), cells))
    tables.append(common.ResultsTable(f'{split}: {len(rows)} images', RESULTS_TITLES[name],
                                      rows))
  return tables


def check_config(config) -> None:
  """A dataset is named; the identity loss needs A and B of the same channels."""
  data, t, model = config.data, config.train, config.model
  if not (data.builtin or data.image_dir or data.tfds_name):
    raise ValueError('config.data: no dataset; set data.image_dir (a folder), data.tfds_name '
                     'or data.builtin')
  if t.lambda_identity > 0:  # The official code asserts the same.
    config_fields.require(model.input_nc == model.output_nc, config, 'train.lambda_identity',
                          f'0 when config.model.input_nc={model.input_nc} and output_nc='
                          f'{model.output_nc} differ (the identity loss compares G(b) with b)')
