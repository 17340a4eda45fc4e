"""CUT and FastCUT (Park, Efros, Zhang, Zhu, ECCV 2020): one-sided unpaired
translation with one generator G: A -> B, one discriminator, and PatchNCE,
which asks each patch of G(a) to be recognised, among the other patches of
its image, as the patch of `a` at the same place. Defaults are those of
taesungp/contrastive-unpaired-translation (configs/cut.py, configs/fastcut.py;
docs/families.md lists them with their source lines).

The train step, against the reference's `optimize_parameters`:
  forward: fake_B = G(a) (CUT: G runs once on [a, b], giving G(a) and G(b));
    FastCUT flips G's input left-right on a coin toss (flip equivariance);
  D first: 0.5 * (loss(D(b), 1) + loss(D(G(a)), 0));
  then G and F through the updated D, with the same fake:
    lambda_GAN * loss(D(G(a)), 1) + NCE(a, G(a))          (FastCUT)
    lambda_GAN * loss(D(G(a)), 1) + (NCE(a, G(a)) + NCE(b, G(b))) / 2   (CUT)
  where NCE(x, y) = lambda_NCE * mean over layers l of the mean over patches of
  PatchNCE(F_l(G_enc_l(y)), F_l(G_enc_l(x))), the patches drawn on x's
  features and reused for y's (queries flipped back if G's input was).

F, the MLP head, is built lazily by the reference (`data_dependent_initialize`:
a forward and backward on the first batch, no update, then that batch trains
as usual); a functional state needs its parameters before the first step, so
`create_state` builds F from the features' shapes, which do not depend on the
data: the same layers, the same initial law (xavier_normal gain 0.02, zero
bias), a fresh Adam state and the same schedule, and the first step is the
reference's first update (tests/test_cut.py checks it against the reference
order written out). Only the random numbers drawn differ.

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
from cyclegan_jax.families import common

KIND = 'cut'


@flax.struct.dataclass
class State:
  step: jax.Array  # int32 scalar: train steps done.
  gen: train_state.TrainState  # G: A -> B (the reference's netG).
  disc: train_state.TrainState  # D: real B vs G(A) (netD).
  patch_mlp: train_state.TrainState  # F: the MLP head on sampled patches (netF).
  rng: jax.Array  # Base key; step keys are fold_in(rng, step).


NETWORKS = ('gen', 'disc', 'patch_mlp')
SHAPE_FIELDS = ('model.netf_nc', 'train.nce_layers')
SWEEPABLE = ('train.lambda_gan', 'train.lambda_nce', 'train.nce_t')
GATED = ('train.lambda_gan', 'train.lambda_nce')


def add_config_fields(config) -> None:
  """CUT's (configs/cut.py sets the reference's values): G's loss is
  lambda_gan * GAN + lambda_nce * PatchNCE (the mean over nce_layers, the
  generator's layers counted as the official nn.Sequential; num_patches per
  image and layer; temperature nce_t), with nce_idt the identity term
  PatchNCE(b, G(b)) too, averaged with it; flip_equivariance (FastCUT) flips
  G's input left-right half of the time."""
  config.model.netf_nc = 256  # Width of F, the MLP head on sampled patches.
  config.train.lambda_gan = 1.0
  config.train.lambda_nce = 1.0
  config.train.nce_idt = True
  config.train.nce_layers = (0, 4, 8, 12, 16)
  config.train.num_patches = 256
  config.train.nce_t = 0.07
  config.train.flip_equivariance = False


def check_fields(config) -> None:
  del config  # CUT's fields are checked when CUT trains (check_config).


def nce_layers(config) -> tuple[int, ...]:
  """config.train.nce_layers as a tuple (config.json stores a list)."""
  return tuple(int(k) for k in config.train.nce_layers)


create_generators = common.single_generator
generator_channels = common.single_generator_channels
domain_channels = common.a_to_b_channels


def encoder_features(generator, params, images, layers, dropout_key=None):
  """The outputs of G's layers `layers` (its encoder, when they stop before
  the upsampling) for `images`."""
  rngs = {'dropout': dropout_key} if dropout_key is not None else None
  return generator.apply({'params': params}, images, train=True, nce_layers=layers, rngs=rngs)


def create_state(config, image_shape, num_devices: int, tx) -> State:
  del num_devices  # Nothing per device: no pool.
  key = jax.random.PRNGKey(config.seed)
  key, *init_keys = jax.random.split(key, 5)  # As CycleGAN's, so seeds mean the same.
  input_nc, output_nc = common.channels(config.model)
  network = functools.partial(common.network_state, image_shape=image_shape, tx=tx)
  generator = create_generators(config.model)['gen']
  gen = network(generator, init_keys[0], channels=input_nc)
  # F's layers take the channels of G's features at the NCE layers: known
  # from their shapes, without data (see the module docstring).
  height, width = image_shape[:2]
  features = jax.eval_shape(
      lambda p: encoder_features(generator, p, jnp.zeros((1, height, width, input_nc)),
                                 nce_layers(config), jax.random.PRNGKey(0)), gen.params)
  mlp = models.PatchSampleMLP(config.model.netf_nc, precision=models.precision(config.model))
  mlp_params = mlp.init(init_keys[3], [jnp.zeros((1, 1, 1, f.shape[-1])) for f in features],
                        [jnp.zeros((1,), jnp.int32)] * len(features))['params']
  return State(
      step=jnp.zeros((), jnp.int32),
      gen=gen,
      disc=network(models.create_discriminator(config.model), init_keys[2], channels=output_nc),
      patch_mlp=train_state.TrainState.create(apply_fn=mlp.apply, params=mlp_params, tx=tx),
      rng=key)


def partition_specs(state: State):
  """Everything replicated over the `data` axis."""
  return jax.tree.map(lambda _: P(), state)


def patch_ids(key, features, num_patches: int) -> list:
  """Per layer, min(num_patches, H * W) distinct flat positions drawn at
  random (the reference's np.random.permutation(H * W)[:num_patches]), the
  same for every image of the batch."""
  keys = jax.random.split(key, len(features))
  return [jax.random.permutation(k, f.shape[1] * f.shape[2])[:min(num_patches,
                                                                   f.shape[1] * f.shape[2])]
          for k, f in zip(keys, features)]


def nce_loss(generator, gen_params, mlp, mlp_params, source, generated, ids_key, *, config,
             flipped=None, dropout_key=None):
  """The reference's calculate_NCE_loss(source, generated): lambda_NCE times
  the mean over the NCE layers of the mean PatchNCE loss of their patches.
  Keys are the source's features (no gradient), queries the generated
  image's, at the same positions; `flipped` (FastCUT) flips the queries back
  when G's input was flipped."""
  t, layers = config.train, nce_layers(config)
  # With dropout each pass of G draws its own masks, as the reference's calls do.
  keys_q, keys_k = jax.random.split(dropout_key) if dropout_key is not None else (None, None)
  feat_q = encoder_features(generator, gen_params, generated, layers, keys_q)
  if flipped is not None:
    feat_q = [jnp.where(flipped, f[:, :, ::-1], f) for f in feat_q]
  feat_k = encoder_features(generator, gen_params, source, layers, keys_k)
  ids = patch_ids(ids_key, feat_k, t.num_patches)
  keys = mlp.apply({'params': mlp_params}, feat_k, ids)
  queries = mlp.apply({'params': mlp_params}, feat_q, ids)
  per_layer = [jnp.mean(losses.patch_nce(q, k, source.shape[0], t.nce_t,
                                         models.precision(config.model)))
               for q, k in zip(queries, keys)]
  return t.lambda_nce * sum(per_layer) / len(layers)


def local_step(state: State, batch, *, config, schedule):
  """The per-device program: `batch` holds this device's A and B images.
  PatchNCE draws its negatives within each image, as the reference. The
  metrics are the terms as they enter G's loss (with nce_idt, gen/nce_x and
  gen/nce_y are each half of the reference's logged loss_NCE, loss_NCE_Y)."""
  t = config.train
  real_a, real_b = batch['A'], batch['B']
  n = real_a.shape[0]
  key = common.step_key(state)
  k_flip, k_dropout, k_ids_x, k_ids_y, k_gp = jax.random.split(key, 5)
  generator = models.create_generator(config.model)
  mlp = models.PatchSampleMLP(config.model.netf_nc, precision=models.precision(config.model))

  # --- forward(): G once over [a, b] (CUT) or a (FastCUT); flip equivariance
  # flips its input left-right on a coin toss. jax.vjp keeps what the G update
  # below needs, so the fakes that D sees are the ones G is trained through.
  real = jnp.concatenate([real_a, real_b]) if t.nce_idt else real_a
  flipped = None
  if t.flip_equivariance:
    flipped = jax.random.uniform(k_flip) < 0.5
    real = jnp.where(flipped, real[:, :, ::-1], real)
  gen_params = common.per_device(state.gen.params)
  fake, pullback = jax.vjp(
      lambda p: state.gen.apply_fn({'params': p}, real, train=True, rngs={'dropout': k_dropout}),
      gen_params)
  fake_b = fake[:n]  # G(a); fake[n:] is G(b), the identity NCE term's.

  def discriminate(params, x):
    return state.disc.apply_fn({'params': params}, x)

  # --- D first: real B against G(a) (no gradient into G).
  def discriminator_loss(params):
    d = functools.partial(discriminate, params)
    fake_b_fixed = jax.lax.stop_gradient(fake_b)
    loss = losses.discriminator_loss(d, real_b, fake_b_fixed, t.gan_mode)
    if t.gan_mode == 'wgangp':  # As in the other families (the reference has none).
      loss += t.lambda_gp * losses.gradient_penalty(d, real_b, fake_b_fixed, k_gp)
    return loss

  d_loss, d_grads = jax.value_and_grad(discriminator_loss)(common.per_device(state.disc.params))
  disc = state.disc.apply_gradients(grads=jax.lax.pmean(d_grads, 'data'))

  # --- G and F: fool the updated D, PatchNCE on a -> G(a) (and b -> G(b)).
  nce = functools.partial(nce_loss, generator, mlp=mlp, config=config, flipped=flipped)

  def generator_loss(params, fake):
    g_params, mlp_params = params
    fake_b, idt_b = fake[:n], fake[n:]
    terms = {}
    if common.enabled(t.lambda_gan):
      terms['gen/adversarial'] = t.lambda_gan * losses.gan_loss(
          discriminate(disc.params, fake_b), True, t.gan_mode)
    if common.enabled(t.lambda_nce):
      nce_x = nce(g_params, mlp_params=mlp_params, source=real_a, generated=fake_b,
                  ids_key=k_ids_x, dropout_key=jax.random.fold_in(k_dropout, 1))
      if t.nce_idt:
        nce_y = nce(g_params, mlp_params=mlp_params, source=real_b, generated=idt_b,
                    ids_key=k_ids_y, dropout_key=jax.random.fold_in(k_dropout, 2))
        terms['gen/nce_x'], terms['gen/nce_y'] = 0.5 * nce_x, 0.5 * nce_y
      else:
        terms['gen/nce_x'] = nce_x
    return sum(terms.values()), terms

  mlp_params = common.per_device(state.patch_mlp.params)
  (_, g_terms), ((g_grads, mlp_grads), fake_grads) = jax.value_and_grad(
      generator_loss, argnums=(0, 1), has_aux=True)((gen_params, mlp_params), fake)
  # The loss depends on G's parameters directly (the encoder on the images)
  # and through the fakes: the chain rule's second part is the pullback.
  g_grads = jax.tree.map(jnp.add, g_grads, pullback(fake_grads)[0])
  gen = state.gen.apply_gradients(grads=jax.lax.pmean(g_grads, 'data'))
  patch_mlp = state.patch_mlp.apply_gradients(grads=jax.lax.pmean(mlp_grads, 'data'))

  metrics = jax.lax.pmean({**g_terms, 'disc/loss': d_loss}, 'data')
  metrics['gen/total'] = sum(metrics[k] for k in g_terms)
  metrics['learning_rate'] = schedule(state.step)
  return state.replace(step=state.step + 1, gen=gen, disc=disc, patch_mlp=patch_mlp), metrics


open_training_data = common.open_unpaired_training_data


def sample_rows(generators, params, samples, config) -> list:
  """Rows of real A | G(A), then real B | G(B) (what the identity NCE term
  keeps close to B), as the reference's real_A, fake_B, real_B, idt_B."""
  del config
  rows = []
  for domain in 'AB':
    fake = common.one_by_one(
        lambda x: generation.generate(generators['gen'], params['gen'], x), samples[domain])
    rows += [common.grid_row(*images) for images in zip(samples[domain], fake)]
  return rows


def directions(config) -> tuple[tuple[str, str], ...]:
  del config
  return (('AtoB', 'gen'),)


def network_for(config, direction: str | None) -> tuple[str, str]:
  del config
  if direction not in (None, 'AtoB'):
    raise ValueError(f'--direction={direction}: a CUT model translates AtoB only (one '
                     'generator, A -> B); for B -> A train one with the domains swapped')
  return 'gen', 'AtoB'


def scored_images(config, num_images: int) -> dict:
  """{'AtoB': (test A images, uint8 real test B images)}."""
  real = common.unpaired_test_images(config, domain_channels(config), num_images)
  return {'AtoB': (real['A'], input_pipeline.to_uint8(real['B']))}


def results_tables(config, params, generators, num_test: int) -> list[common.ResultsTable]:
  """real A | A->B of the first num_test test A images (the reference's
  real_A | fake_B)."""
  source = input_pipeline.open_sources(config.data, domain_channels(config))['testA']
  rows = []
  for i in range(min(num_test, len(source))):
    real = input_pipeline.preprocess(source[i], config.data, None)
    fake = generation.generate(generators['gen'], params['gen'], real[None])
    cells = [(f'testA_{i:04d}_{kind}.png', image)
             for kind, image in (('real', real), ('fake', fake[0]))]
    rows.append((common.row_label(source, i), cells))
  return [common.ResultsTable(f'testA: {len(rows)} images', ('real A', 'A→B'), rows)]


def check_config(config) -> None:
  """A dataset; a resnet generator whose layers hold the NCE layers; the
  identity NCE term needs A and B of the same channels; PatchNCE's numbers."""
  data, t, model = config.data, config.train, config.model
  if not (data.builtin or data.image_dir or data.tfds_name):
    raise ValueError('config.data: no dataset; set data.image_dir (a folder), data.tfds_name '
                     'or data.builtin')
  generator = models.create_generator(model)
  config_fields.require(isinstance(generator, models.ResnetGenerator), config, 'model.generator',
                        "a resnet generator for CUT (nce_layers index its layers), e.g. "
                        "'resnet_9blocks'")
  layers = tuple(t.nce_layers)
  config_fields.require(
      len(layers) > 0 and all(isinstance(k, int) and not isinstance(k, bool) and k >= 0
                              for k in layers) and list(layers) == sorted(set(layers)),
      config, 'train.nce_layers', 'increasing layer indices >= 0, e.g. (0, 4, 8, 12, 16)')
  try:  # Tracing only: an index past the generator's last layer is named.
    jax.eval_shape(lambda: generator.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)),
                                          nce_layers=layers))
  except ValueError as e:
    raise ValueError(f'config.train.{e}') from None
  for name in ('train.num_patches', 'model.netf_nc'):
    value = config_fields.field(config, name)
    config_fields.require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                          config, name, 'an integer >= 1')
  for name, low in (('train.lambda_gan', 0), ('train.lambda_nce', 0)):
    value = config_fields.field(config, name)
    config_fields.require(isinstance(value, (int, float)) and value >= low, config, name,
                          f'a number >= {low}')
  config_fields.require(isinstance(t.nce_t, (int, float)) and t.nce_t > 0, config, 'train.nce_t',
                        'a number > 0 (the PatchNCE temperature)')
  if t.nce_idt and t.lambda_nce > 0:
    config_fields.require(model.input_nc == model.output_nc, config, 'train.nce_idt',
                          f'False when config.model.input_nc={model.input_nc} and output_nc='
                          f'{model.output_nc} differ (the identity term runs G on B images)')
