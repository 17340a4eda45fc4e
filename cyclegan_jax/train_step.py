"""One training step, data-parallel over the `data` mesh axis.

CycleGAN, read top to bottom against Zhu et al. 2017: the generators minimise
  L_GAN(G, D_B) + L_GAN(F, D_A) + lambda_cyc * (|F(G(a)) - a| + |G(F(b)) - b|)
    + lambda_id * lambda_cyc * (|G(b) - b| + |F(a) - a|),
then each discriminator minimises 0.5 * (loss(D(real), 1) + loss(D(pooled fake), 0)).

pix2pix, against Isola et al. 2017 in the official order: the discriminator
first minimises 0.5 * (loss(D(x, y), 1) + loss(D(x, G(x)), 0)), then the
generator minimises loss(D(x, G(x)), 1) + lambda_L1 * |G(x) - y| through the
updated discriminator.
"""

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from cyclegan_jax import image_pool
from cyclegan_jax import losses
from cyclegan_jax import paired_data
from cyclegan_jax import state as state_lib


def _per_device(tree):
  """Marks replicated values as per-device before differentiating, so that
  the gradients are per device and `pmean` averages them (as `pmap` did);
  without it, shard_map's autodiff already sums them over devices."""
  return jax.lax.pcast(tree, 'data', to='varying')


def local_train_step(state: state_lib.CycleGANState, batch, *, config, schedule):
  """The per-device program: `batch` holds this device's images."""
  t = config.train
  real_a, real_b = batch['A'], batch['B']
  key = jax.random.fold_in(jax.random.fold_in(state.rng, state.step),
                           jax.lax.axis_index('data'))
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
    if t.lambda_identity > 0:
      weight = t.lambda_identity * t.lambda_cycle
      terms['identity/ab'] = weight * losses.l1(generate(state.gen_ab, p_ab, real_b), real_b)
      terms['identity/ba'] = weight * losses.l1(generate(state.gen_ba, p_ba, real_a), real_a)
    return sum(terms.values()), (fake_a, fake_b, terms)

  gen_params = _per_device((state.gen_ab.params, state.gen_ba.params))
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

  disc_params = _per_device((state.disc_a.params, state.disc_b.params))
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


def local_pix2pix_step(state: state_lib.Pix2PixState, batch, *, config, schedule):
  """The per-device pix2pix program: `batch` holds this device's (A, B) pairs."""
  t = config.train
  real_in, real_out = paired_data.input_and_target(batch, config.data.direction)  # x, y
  key = jax.random.fold_in(jax.random.fold_in(state.rng, state.step),
                           jax.lax.axis_index('data'))

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

  d_loss, d_grads = jax.value_and_grad(discriminator_loss)(_per_device(state.disc.params))
  disc = state.disc.apply_gradients(grads=jax.lax.pmean(d_grads, 'data'))

  # --- Generator: fool the updated discriminator, stay near the target in L1.
  def generator_loss(params):
    fake = generate(params)
    terms = {'gen/adversarial': losses.gan_loss(discriminate(disc.params, fake), True,
                                                t.gan_mode),
             'gen/l1': t.lambda_l1 * losses.l1(fake, real_out)}
    return sum(terms.values()), terms

  (_, g_terms), g_grads = jax.value_and_grad(generator_loss, has_aux=True)(
      _per_device(state.gen.params))
  gen = state.gen.apply_gradients(grads=jax.lax.pmean(g_grads, 'data'))

  metrics = jax.lax.pmean({**g_terms, 'disc/loss': d_loss}, 'data')
  metrics['gen/total'] = sum(metrics[k] for k in g_terms)
  metrics['learning_rate'] = schedule(state.step)
  return state.replace(step=state.step + 1, gen=gen, disc=disc), metrics


def check_global_batch(batch_size: int, num_devices: int) -> None:
  """Each device takes an equal share of the global batch."""
  if batch_size % num_devices:
    raise ValueError(f'config.train.batch_size={batch_size} is not divisible by the '
                     f'{num_devices} devices; use a multiple of {num_devices}')


def make_train_step(config, mesh: jax.sharding.Mesh, abstract_state, schedule):
  """Returns jit(shard_map(local_train_step)): (state, batch) -> (state, metrics).

  `batch` is {'A': images, 'B': images}, global arrays sharded over `data`.
  The state is donated so its buffers are reused.
  """
  specs = state_lib.partition_specs(abstract_state)
  local_step = (local_pix2pix_step if isinstance(abstract_state, state_lib.Pix2PixState)
                else local_train_step)
  step = jax.shard_map(
      functools.partial(local_step, config=config, schedule=schedule),
      mesh=mesh, in_specs=(specs, P('data')), out_specs=(specs, P()))
  # The new state in exactly the shardings the state came in (shard_map would
  # spell them P(None, ...), which the jit cache does not match with P()), so
  # that step 2 runs the program compiled for step 1.
  state_shardings = state_lib.shardings(mesh, abstract_state)
  return jax.jit(step, out_shardings=(state_shardings, jax.NamedSharding(mesh, P())),
                 donate_argnums=0)
