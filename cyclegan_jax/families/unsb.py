"""UNSB (Kim, Kwon, Kim, Ye, ICLR 2024): unpaired translation as a neural
Schrödinger bridge from A to B, learnt in T steps on a fixed time grid, one
step index k per batch. Defaults are those of cyclomon/UNSB (configs/unsb.py;
docs/families.md lists them with their source lines). Its networks are
sb_models.py's: G(x_t, t, z) predicts x_1, D(x, t) the PatchGAN, E(pair, t,
pair') the entropy estimator; F is CUT's MLP head.

The train step, against the reference's `forward` and `optimize_parameters`
(models/sb_model.py):
  k ~ U{0..T-1}, the same on every device (one k per global batch, as the
    reference draws one per batch);
  x_k of three chains without gradient, from a, a2 (a second A image) and b:
    x_0 = x, x_t = bridge(x_{t-1}, G(x_{t-1}, t-1, z), t) for t = 1..k,
    the three batched into one run of G per t (the reference runs each
    chain separately and calls G once more at t = k, a result it discards);
  fake = G(x_k, k, z) for the three at once: G(a_k) (fake_B), G(b_k) (idt_B),
    G(a2_k) (fake_B2);
  D first: 0.5 (loss(D(b, k), 1) + loss(D(G(a_k), k), 0));
  then E, on (x, G(x)) pairs without gradient into G:
    -mean E([a_k, G(a_k)], k, itself) + l + l^2,
    l = logsumexp over all outputs of E([a_k, G(a_k)], k, [a2_k, G(a2_k)]);
  then G and F through the updated D and E:
    lambda_GAN loss(D(G(a_k), k), 1)
    + lambda_SB (-(T - k)/T tau (mean E(p, k, p) - logsumexp E(p, k, p2))
                 + tau mean (a_k - G(a_k))^2)
    + lambda_NCE (NCE(a, G(a_k)) + NCE(b, G(b_k))) / 2,
  NCE as CUT's, with G's encoder at t = 0 and a fresh z for both images, and
  lambda_NCE inside it too: the reference applies it twice (squared).
The metrics are the terms as they enter G's loss.

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
from cyclegan_jax import sb_models
from cyclegan_jax.data import input_pipeline
from cyclegan_jax.families import common
from cyclegan_jax.families import cut

KIND = 'unsb'


@flax.struct.dataclass
class State:
  step: jax.Array  # int32 scalar: train steps done.
  gen: train_state.TrainState  # G(x_t, t, z): A -> B in steps (the reference's netG).
  disc: train_state.TrainState  # D(x, t): real B vs G(x_k) (netD).
  entropy: train_state.TrainState  # E(pair, t, pair'): the entropy term's estimator (netE).
  patch_mlp: train_state.TrainState  # F: the MLP head on sampled patches (netF).
  rng: jax.Array  # Base key; step keys are fold_in(rng, step).


NETWORKS = ('gen', 'disc', 'entropy', 'patch_mlp')
SHAPE_FIELDS = ('model.netf_nc', 'train.nce_layers', 'model.unsb_n_mlp',
                'model.unsb_num_timesteps', 'model.unsb_time_conditioning')
SWEEPABLE = ('train.lambda_gan', 'train.lambda_nce', 'train.lambda_sb', 'model.unsb_tau')
GATED = ('train.lambda_gan', 'train.lambda_nce', 'train.lambda_sb')
BATCH_DOMAINS = {'A': 'A', 'B': 'B', 'A2': 'A'}  # A2: the reference's second loader's A.
# CUT's fields it reads too (all but flip_equivariance): its PatchNCE and GAN weight.
ALSO_READS = ('model.netf_nc', 'train.lambda_gan', 'train.lambda_nce', 'train.nce_idt',
              'train.nce_layers', 'train.nce_t', 'train.num_patches')


def add_config_fields(config) -> None:
  """UNSB's (configs/unsb.py sets the reference's values); it also reads
  CUT's PatchNCE fields (lambda_nce, nce_idt, nce_layers, num_patches,
  nce_t, netf_nc) and lambda_gan: T = unsb_num_timesteps steps on the time
  grid, tau = unsb_tau the bridge's noise (and the SB term's weight inside
  it), lambda_sb the SB term's weight, unsb_n_mlp the z mapping's extra
  layers, unsb_time_conditioning 'official' or 'fixed' (sb_models.py), and
  unsb_nfe the steps a translation takes (0: all T)."""
  config.model.unsb_num_timesteps = 5
  config.model.unsb_tau = 0.01
  config.model.unsb_n_mlp = 3
  config.model.unsb_time_conditioning = 'official'
  config.model.unsb_nfe = 0
  config.train.lambda_sb = 1.0


def check_fields(config) -> None:
  model = config.model
  config_fields.require(
      isinstance(model.unsb_num_timesteps, int) and not isinstance(model.unsb_num_timesteps, bool)
      and model.unsb_num_timesteps >= 1, config, 'model.unsb_num_timesteps',
      'an integer >= 1 (the steps of the bridge)')
  config_fields.require(isinstance(model.unsb_tau, (int, float)) and model.unsb_tau >= 0,
                        config, 'model.unsb_tau', 'a number >= 0 (the bridge noise)')
  config_fields.require(model.unsb_time_conditioning in sb_models.TIME_CONDITIONINGS, config,
                        'model.unsb_time_conditioning',
                        f'one of {", ".join(sb_models.TIME_CONDITIONINGS)}')
  config_fields.require(
      isinstance(model.unsb_nfe, int) and 0 <= model.unsb_nfe <= model.unsb_num_timesteps,
      config, 'model.unsb_nfe',
      f'an integer from 1 to model.unsb_num_timesteps={model.unsb_num_timesteps} (0: all)')
  config_fields.require(isinstance(model.unsb_n_mlp, int) and model.unsb_n_mlp >= 0, config,
                        'model.unsb_n_mlp', 'an integer >= 0')


def create_generators(model_config) -> dict:
  """{'gen': the conditional generator}; called without t it translates in
  model_config.unsb_nfe steps (0: all)."""
  return {'gen': _generator(model_config)}


def _generator(model_config, tau=None) -> sb_models.ConditionalResnetGenerator:
  generator = models.create_generator(model_config)  # The resnet generator's settings.
  return sb_models.ConditionalResnetGenerator(
      n_blocks=generator.n_blocks, ngf=model_config.ngf, output_nc=model_config.output_nc,
      n_mlp=model_config.unsb_n_mlp, time_conditioning=model_config.unsb_time_conditioning,
      num_timesteps=model_config.unsb_num_timesteps,
      tau=model_config.unsb_tau if tau is None else tau, nfe=model_config.unsb_nfe,
      norm=generator.norm, dtype=generator.dtype, conv=generator.conv,
      precision=models.precision(model_config))


def _discriminator(model_config) -> sb_models.ConditionalPatchGAN:
  discriminator = models.create_discriminator(model_config)
  return sb_models.ConditionalPatchGAN(
      ndf=model_config.ndf, n_layers=getattr(discriminator, 'n_layers', 3),
      norm=discriminator.norm, dtype=discriminator.dtype, conv=discriminator.conv,
      precision=models.precision(model_config))


generator_channels = common.single_generator_channels
domain_channels = common.a_to_b_channels


def create_state(config, image_shape, num_devices: int, tx) -> State:
  del num_devices  # Nothing per device: no pool.
  key = jax.random.PRNGKey(config.seed)
  key, *init_keys = jax.random.split(key, 5)  # As CycleGAN's, so seeds mean the same.
  input_nc, output_nc = common.channels(config.model)
  height, width = image_shape[:2]
  image = lambda channels: jnp.zeros((1, height, width, channels), jnp.float32)
  t = jnp.zeros((1,), jnp.int32)
  generator = _generator(config.model)
  z = jnp.zeros((1, 4 * config.model.ngf), jnp.float32)
  gen_params = generator.init(init_keys[0], image(input_nc), t, z)['params']
  discriminator = _discriminator(config.model)
  disc_params = discriminator.init(init_keys[2], image(output_nc), t)['params']
  # E sees two (x_k, G(x_k)) pairs: 4 images' channels.
  entropy_params = discriminator.init(init_keys[1], image(2 * output_nc), t,
                                      image(2 * output_nc))['params']
  features = jax.eval_shape(lambda p: generator.apply({'params': p}, image(input_nc), t, z,
                                                      nce_layers=cut.nce_layers(config)),
                            gen_params)
  mlp = models.PatchSampleMLP(config.model.netf_nc, precision=models.precision(config.model))
  mlp_params = mlp.init(init_keys[3], [jnp.zeros((1, 1, 1, f.shape[-1])) for f in features],
                        [jnp.zeros((1,), jnp.int32)] * len(features))['params']
  network = lambda module, params: train_state.TrainState.create(apply_fn=module.apply,
                                                                 params=params, tx=tx)
  return State(step=jnp.zeros((), jnp.int32), gen=network(generator, gen_params),
               disc=network(discriminator, disc_params),
               entropy=network(discriminator, entropy_params),
               patch_mlp=network(mlp, mlp_params), rng=key)


def partition_specs(state: State):
  """Everything replicated over the `data` axis."""
  return jax.tree.map(lambda _: P(), state)


def bridge_chains(generator, params, x, k, times, tau, key) -> jax.Array:
  """x_k of the chains from x (no gradient): k runs of G, one program for
  every k (a loop of k turns)."""
  n = x.shape[0]

  def turn(t, carry):
    x, key = carry
    key, z_key, noise_key = jax.random.split(key, 3)
    z = jax.random.normal(z_key, (n, 4 * generator.ngf), jnp.float32)
    predicted = generator.apply({'params': params}, x, jnp.full((n,), t, jnp.int32), z)
    noise = jax.random.normal(noise_key, x.shape, jnp.float32)
    return sb_models.bridge_step(x, predicted, t + 1, times, tau, noise), key

  return jax.lax.stop_gradient(jax.lax.fori_loop(0, k, turn, (x, key))[0])


def nce_loss(generator, gen_params, mlp, mlp_params, source, generated, key, *, config):
  """The reference's calculate_NCE_loss: lambda_NCE times the mean over the
  NCE layers of the mean PatchNCE loss, G's encoder run at t = 0 with one
  fresh z for both images."""
  t, layers = config.train, cut.nce_layers(config)
  z_key, ids_key = jax.random.split(key)
  n = source.shape[0]
  z = jax.random.normal(z_key, (n, 4 * generator.ngf), jnp.float32)
  zero = jnp.zeros((n,), jnp.int32)
  encode = lambda x: generator.apply({'params': gen_params}, x, zero, z, nce_layers=layers)
  feat_q, feat_k = encode(generated), encode(source)
  ids = cut.patch_ids(ids_key, feat_k, t.num_patches)
  keys = mlp.apply({'params': mlp_params}, feat_k, ids)
  queries = mlp.apply({'params': mlp_params}, feat_q, ids)
  per_layer = [jnp.mean(losses.patch_nce(q, k, n, t.nce_t, models.precision(config.model)))
               for q, k in zip(queries, keys)]
  return t.lambda_nce * sum(per_layer) / len(layers)


def local_step(state: State, batch, *, config, schedule):
  """The per-device program: `batch` holds this device's A, B and A2 images
  (A2: the reference's second loader's A images)."""
  t, model = config.train, config.model
  real_a, real_b, real_a2 = batch['A'], batch['B'], batch['A2']
  n = real_a.shape[0]
  num_steps, tau = model.unsb_num_timesteps, model.unsb_tau
  times = sb_models.time_grid(num_steps)
  # One k for the global batch: drawn before the device index is folded in.
  k = jax.random.randint(jax.random.fold_in(state.rng, state.step), (), 0, num_steps)
  key = common.step_key(state)
  k_chain, k_fake, k_nce_x, k_nce_y = jax.random.split(key, 4)
  generator = _generator(model, tau=0.0)  # Its tau is for translating; the step's is `tau`.
  mlp = models.PatchSampleMLP(model.netf_nc, precision=models.precision(model))
  gen_params = common.per_device(state.gen.params)

  # --- x_k of the three chains, then G(x_k, k, z) of all three with gradient
  # (jax.vjp keeps what the G update needs, so D and E see the fakes G is
  # trained through).
  starts = [real_a, real_a2] + ([real_b] if t.nce_idt else [])
  x_k = bridge_chains(generator, state.gen.params, jnp.concatenate(starts), k, times, tau,
                      k_chain)
  z = jax.random.normal(k_fake, (x_k.shape[0], 4 * model.ngf), jnp.float32)
  fake, pullback = jax.vjp(
      lambda p: generator.apply({'params': p}, x_k, jnp.full((x_k.shape[0],), k), z), gen_params)
  a_k, a2_k = x_k[:n], x_k[n:2 * n]

  def discriminate(params, x):
    return state.disc.apply_fn({'params': params}, x, jnp.full((x.shape[0],), k))

  def entropy(params, pair, other):
    return state.entropy.apply_fn({'params': params}, pair, jnp.full((pair.shape[0],), k), other)

  # --- D first: real B against G(a_k) (no gradient into G).
  fixed = jax.lax.stop_gradient(fake)
  d_loss, d_grads = jax.value_and_grad(lambda p: losses.discriminator_loss(
      functools.partial(discriminate, p), real_b, fixed[:n], t.gan_mode))(
          common.per_device(state.disc.params))
  disc = state.disc.apply_gradients(grads=jax.lax.pmean(d_grads, 'data'))

  # --- E: the entropy estimator on (x_k, G(x_k)) pairs (no gradient into G).
  pair = jnp.concatenate([a_k, fixed[:n]], axis=-1)
  other = jnp.concatenate([a2_k, fixed[n:2 * n]], axis=-1)

  def entropy_loss(params):
    logsumexp = jax.nn.logsumexp(entropy(params, pair, other))
    return -jnp.mean(entropy(params, pair, pair)) + logsumexp + logsumexp**2

  e_loss, e_grads = jax.value_and_grad(entropy_loss)(common.per_device(state.entropy.params))
  ent = state.entropy.apply_gradients(grads=jax.lax.pmean(e_grads, 'data'))

  # --- G and F: fool the updated D, the SB term through the updated E,
  # PatchNCE on a -> G(a_k) (and b -> G(b_k)).
  nce = functools.partial(nce_loss, generator, mlp=mlp, config=config)

  def generator_loss(params, fake):
    g_params, mlp_params = params
    fake_b, fake_b2 = fake[:n], fake[n:2 * n]
    terms = {}
    if common.enabled(t.lambda_gan):
      terms['gen/adversarial'] = t.lambda_gan * losses.gan_loss(
          discriminate(disc.params, fake_b), True, t.gan_mode)
    if common.enabled(t.lambda_sb):
      pair = jnp.concatenate([a_k, fake_b], axis=-1)
      other = jnp.concatenate([a2_k, fake_b2], axis=-1)
      mutual = (jnp.mean(entropy(ent.params, pair, pair))
                - jax.nn.logsumexp(entropy(ent.params, pair, other)))
      sb = -(num_steps - k) / num_steps * tau * mutual + tau * jnp.mean((a_k - fake_b)**2)
      terms['gen/sb'] = t.lambda_sb * sb
    if common.enabled(t.lambda_nce):
      nce_x = nce(g_params, mlp_params=mlp_params, source=real_a, generated=fake_b,
                  key=k_nce_x)
      if t.nce_idt:
        nce_y = nce(g_params, mlp_params=mlp_params, source=real_b, generated=fake[2 * n:],
                    key=k_nce_y)
        terms['gen/nce_x'] = t.lambda_nce * 0.5 * nce_x
        terms['gen/nce_y'] = t.lambda_nce * 0.5 * nce_y
      else:
        terms['gen/nce_x'] = t.lambda_nce * nce_x
    return sum(terms.values()), terms

  mlp_params = common.per_device(state.patch_mlp.params)
  (_, g_terms), ((g_grads, mlp_grads), fake_grads) = jax.value_and_grad(
      generator_loss, argnums=(0, 1), has_aux=True)((gen_params, mlp_params), fake)
  g_grads = jax.tree.map(jnp.add, g_grads, pullback(fake_grads)[0])
  gen = state.gen.apply_gradients(grads=jax.lax.pmean(g_grads, 'data'))
  patch_mlp = state.patch_mlp.apply_gradients(grads=jax.lax.pmean(mlp_grads, 'data'))

  metrics = jax.lax.pmean({**g_terms, 'disc/loss': d_loss, 'entropy/loss': e_loss}, 'data')
  metrics['gen/total'] = sum(metrics[name] for name in g_terms)
  metrics['time_index'] = k.astype(jnp.float32)
  metrics['learning_rate'] = schedule(state.step)
  return state.replace(step=state.step + 1, gen=gen, disc=disc, entropy=ent,
                       patch_mlp=patch_mlp), metrics


def open_training_data(config, shard, channels):
  """CycleGAN's and CUT's unpaired data, each batch with A2 too: a second A
  image per example, drawn as the reference's second loader's."""
  batches, samples, description = common.open_unpaired_training_data(config, shard, channels)
  batches.second_a = True
  return batches, samples, description


# As CUT's: rows of real A | its translation, real B | G's translation of B;
# A -> B only; the test sets of one generator.
sample_rows = cut.sample_rows
directions = cut.directions
network_for = cut.network_for
scored_images = cut.scored_images


def results_tables(config, params, generators, num_test: int) -> list[common.ResultsTable]:
  """real A | its translation after 1, 2, ..., nfe (0: T) steps, side by
  side, for the first num_test test A images."""
  generator = generators['gen']
  source = input_pipeline.open_sources(config.data, domain_channels(config))['testA']
  rows = []
  for i in range(min(num_test, len(source))):
    real = input_pipeline.preprocess(source[i], config.data, None)
    steps = generation.generate_every_step(generator, params['gen'], real[None])[0]
    cells = [(f'testA_{i:04d}_real.png', real)] + [
        (f'testA_{i:04d}_nfe{n + 1}.png', image) for n, image in enumerate(steps)]
    rows.append((common.row_label(source, i), cells))
  titles = ('real A', *(f'A→B, NFE {n + 1}' for n in range(len(rows[0][1]) - 1 if rows else 0)))
  return [common.ResultsTable(f'testA: {len(rows)} images (seed {generator.seed})', titles,
                              rows)]


def check_config(config) -> None:
  """CUT's checks (data, a resnet generator, the NCE fields), and UNSB's own."""
  cut.check_config(config)
  check_fields(config)
  config_fields.require(config.model.discriminator in ('basic', 'n_layers'), config,
                        'model.discriminator', "'basic' or 'n_layers' for UNSB (a PatchGAN "
                        'conditioned on the time step)')
  lambda_sb = config.train.lambda_sb
  config_fields.require(isinstance(lambda_sb, (int, float)) and lambda_sb >= 0, config,
                        'train.lambda_sb', 'a number >= 0')
