"""CUT and FastCUT: the reference's networks and loss, its update order, a
task it must learn, reruns and resumes, and the A->B-only tools."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from configs import cut as cut_config
from configs import tiny_cut
from cyclegan_jax import generation
from cyclegan_jax.ops import blur
from cyclegan_jax import checkpoints
from cyclegan_jax import evaluate
from cyclegan_jax import inception
from cyclegan_jax import inception_weights
from cyclegan_jax.data import input_pipeline
from cyclegan_jax import losses
from cyclegan_jax import models
from cyclegan_jax import results_page
from cyclegan_jax import state as state_lib
from cyclegan_jax import train
from cyclegan_jax import translate
from cyclegan_jax.families import cut
from tests import learning_comparison
from tests import one_step
from tests import synthetic
from tests import test_reproducibility
from tests import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parameter_counts_and_shapes_are_the_references():
  """At the reference's defaults (ngf = ndf = 64, netF_nc 256, 256 px): G
  11,378,179, D 2,764,737, F 560,384 parameters (the reference's own counts,
  README); the NCE layers 0, 4, 8, 12, 16 are the padded image, the two
  stride-1 down convolutions (before their norm) and residual blocks 1 and 5;
  D gives a 30x30 map."""
  config = cut_config.get_config()
  abstract = jax.eval_shape(lambda: state_lib.create_state(
      config, (256, 256), 1, steps_per_epoch=10))
  counts = {name: models.count_params(getattr(abstract, name).params) for name in cut.NETWORKS}
  assert counts == {'gen': 11_378_179, 'disc': 2_764_737, 'patch_mlp': 560_384}
  mlp = abstract.patch_mlp.params
  assert [mlp[f'mlp_{i}_0']['kernel'].shape for i in range(5)] == [
      (3, 256), (128, 256), (256, 256), (256, 256), (256, 256)]
  generator = models.create_generator(config.model)
  image = jnp.zeros((1, 256, 256, 3))
  features = jax.eval_shape(lambda p: cut.encoder_features(
      generator, p, image, cut.nce_layers(config)), abstract.gen.params)
  assert [f.shape[1:] for f in features] == [(262, 262, 3), (256, 256, 128), (128, 128, 256),
                                             (64, 64, 256), (64, 64, 256)]
  disc = models.create_discriminator(config.model)
  assert jax.eval_shape(disc.apply, {'params': abstract.disc.params}, image).shape == (
      1, 30, 30, 1)
  assert jax.eval_shape(lambda p: generator.apply({'params': p}, image),
                        abstract.gen.params).shape == (1, 256, 256, 3)


def test_nce_layers_are_the_references_sequential_entries():
  """The features at 0, 4, 8, 12, 13 of the tiny generator, recomputed from
  its parameters layer by layer as the reference's Sequential runs: 0 the
  reflection-padded input, 4 and 8 the stride-1 down convolutions before
  their norm, 12 and 13 the outputs of residual blocks 1 and 2."""
  config = tiny_cut.get_config()
  generator = models.create_generator(config.model)
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
  params = generator.init(jax.random.PRNGKey(0), x)['params']
  features = cut.encoder_features(generator, params, x, cut.nce_layers(config))

  def conv(name, y, padding):
    y = jax.lax.conv_general_dilated(y, params[name]['kernel'], (1, 1), [(padding,) * 2] * 2,
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return y + params[name]['bias']

  def norm_relu(y):  # InstanceNorm2d(affine=False), eps 1e-5, then ReLU.
    mean, var = jnp.mean(y, (1, 2), keepdims=True), jnp.var(y, (1, 2), keepdims=True)
    return jax.nn.relu((y - mean) / jnp.sqrt(var + 1e-5))

  block = models.ResnetBlock(32, init_type='xavier')
  expected = [jnp.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)), mode='reflect')]
  expected.append(conv('Conv_1', norm_relu(conv('Conv_0', expected[0], 0)), 1))
  expected.append(conv('Conv_2', blur.blur_downsample(norm_relu(expected[1])), 1))
  expected.append(block.apply({'params': params['ResnetBlock_0']},
                              blur.blur_downsample(norm_relu(expected[2]))))
  expected.append(block.apply({'params': params['ResnetBlock_1']}, expected[3]))
  assert len(features) == len(expected)
  for ours, theirs in zip(features, expected):
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_blur_layers_and_init_are_the_references():
  """blur_downsample / blur_upsample against the reference's Downsample and
  Upsample layers (their defaults) computed by PyTorch, at odd and even
  sizes; xavier init's spread."""
  torch = pytest.importorskip('torch')
  f = torch.nn.functional
  x = np.random.default_rng(0).normal(size=(2, 7, 10, 3)).astype(np.float32)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  to_nhwc = lambda t: t.numpy().transpose(0, 2, 3, 1)
  # Downsample(filt_size=3, pad_type='reflect', stride=2).
  filt = torch.tensor(np.outer([1., 2., 1.], [1., 2., 1.]) / 16, dtype=torch.float32)
  down = f.conv2d(torch.nn.ReflectionPad2d(1)(xt), filt[None, None].repeat(3, 1, 1, 1),
                  stride=2, groups=3)
  np.testing.assert_allclose(blur.blur_downsample(x), to_nhwc(down), atol=1e-6)
  # Upsample(filt_size=4, pad_type='repl', stride=2).
  a = np.array([1., 3., 3., 1.])
  filt = torch.tensor(np.outer(a, a) / np.outer(a, a).sum() * 4, dtype=torch.float32)
  up = f.conv_transpose2d(torch.nn.ReplicationPad2d(1)(xt), filt[None, None].repeat(3, 1, 1, 1),
                          stride=2, padding=2, groups=3)[:, :, 1:, 1:][:, :, :-1, :-1]
  np.testing.assert_allclose(blur.blur_upsample(x), to_nhwc(up), atol=1e-6)
  # xavier_normal_(gain=0.02): std 0.02 * sqrt(2 / (fan_in + fan_out)), fans with taps.
  kernel = models.INITS['xavier'](jax.random.PRNGKey(0), (3, 3, 64, 128))
  expected = 0.02 * np.sqrt(2 / (64 * 9 + 128 * 9))
  assert abs(float(jnp.std(kernel)) / expected - 1) < 0.02
  assert abs(float(jnp.mean(kernel))) < 0.05 * expected


def _reference_patch_nce(q, k, num_images, temperature):
  """patchnce.py, loop by loop in NumPy: per query, cross entropy over
  [its key, the keys of its image's patches with its own one set to -10]."""
  patches = len(q) // num_images
  out = []
  for n in range(len(q)):
    image = n // patches
    negatives = [q[n] @ k[image * patches + j] if image * patches + j != n else -10.0
                 for j in range(patches)]
    logits = np.array([q[n] @ k[n], *negatives]) / temperature
    out.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[0])
  return np.array(out)


def test_patch_nce_is_the_reference_formula():
  rng = np.random.default_rng(0)
  unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)
  q, k = (unit(rng.normal(size=(2 * 5, 4))).astype(np.float32) for _ in range(2))
  ours = losses.patch_nce(q, k, num_images=2, temperature=0.07)
  np.testing.assert_allclose(ours, _reference_patch_nce(q, k, 2, 0.07), rtol=1e-5)
  # Negatives come only from the same image: another image's keys change nothing.
  k2 = k.copy()
  k2[5:] = unit(rng.normal(size=(5, 4)))
  np.testing.assert_allclose(losses.patch_nce(q, k2, 2, 0.07)[:5], ours[:5], rtol=1e-6)
  # The keys (the real image's path) get no gradient.
  grad = jax.grad(lambda k: jnp.sum(losses.patch_nce(q, k, 2, 0.07)))(k)
  assert not np.any(grad)


def _device_keys(rng, device):
  """The step keys of step 0 on `device`: (flip, dropout, ids X, ids Y, gp)."""
  return jax.random.split(jax.random.fold_in(jax.random.fold_in(rng, 0), device), 5)


def _reference_step(config, state, batch, num_devices):
  """One step as the reference's optimize_parameters, written out with Optax
  and without our step's code: forward; D on real B vs G(a), updated first;
  then G and F on lambda_GAN * LSGAN(D_new(G(a)), 1) + PatchNCE terms, one
  gradient of both (G's forward recomputed: autodiff of the whole). F is the
  MLP head written out from its parameters; patch ids are the step's draws.
  Each device takes its slice; gradients averaged. Returns (params of gen,
  disc, patch_mlp; gradients of the same; loss values)."""
  t, layers = config.train, cut.nce_layers(config)
  gen, disc = models.create_generator(config.model), models.create_discriminator(config.model)
  tx = optax.adam(t.lr, b1=0.5, b2=0.999)  # The reference's three Adams (cut:89-90, 110).
  # Compiled, as the losses below: op by op, each parameter's shape
  # compiles its own small programs.
  adam = jax.jit(lambda params, grads: optax.apply_updates(
      params, tx.update(grads, tx.init(params), params)[0]))
  mean = jax.jit(lambda trees: jax.tree.map(lambda *v: sum(v) / len(v), *trees))
  mse = lambda prediction, target: jnp.mean((prediction - target) ** 2)

  def head(fp, i, feature, ids):  # Sample, Linear, ReLU, Linear, normalise.
    b, h, w, c = feature.shape
    x = feature.reshape(b, h * w, c)[:, ids].reshape(-1, c)
    first, second = fp[f'mlp_{i}_0'], fp[f'mlp_{i}_1']
    x = jax.nn.relu(x @ first['kernel'] + first['bias']) @ second['kernel'] + second['bias']
    return x / (jnp.linalg.norm(x, axis=1, keepdims=True) + 1e-7)

  def nce(gp, fp, source, generated, ids_key, flipped):
    encode = lambda x: gen.apply({'params': gp}, x, nce_layers=layers)
    feat_q, feat_k = encode(generated), encode(source)
    if flipped:
      feat_q = [f[:, :, ::-1] for f in feat_q]
    total = 0.0
    for i, (key, fq, fk) in enumerate(zip(jax.random.split(ids_key, len(layers)), feat_q,
                                          feat_k)):
      hw = fk.shape[1] * fk.shape[2]
      ids = jax.random.permutation(key, hw)[:min(t.num_patches, hw)]
      q = head(fp, i, fq, ids)
      k = jax.lax.stop_gradient(head(fp, i, fk, ids))
      s = len(ids)
      l_pos = jnp.sum(q * k, 1, keepdims=True)
      l_neg = jnp.einsum('bsd,btd->bst', q.reshape(source.shape[0], s, -1),
                         k.reshape(source.shape[0], s, -1))
      l_neg = jnp.where(jnp.eye(s, dtype=bool), -10.0, l_neg).reshape(-1, s)
      logits = jnp.concatenate([l_pos, l_neg], 1) / t.nce_t
      total += jnp.mean(-jax.nn.log_softmax(logits)[:, 0]) * t.lambda_nce
    return total / len(layers)

  def fakes(gp, a, b, flipped):
    real = jnp.concatenate([a, b]) if t.nce_idt else a
    fake = gen.apply({'params': gp}, real[:, :, ::-1] if flipped else real)
    return fake[:len(a)], fake[len(a):]

  def d_loss(dp, gp, a, b, flipped):
    fake_b = fakes(gp, a, b, flipped)[0]
    return 0.5 * (mse(disc.apply({'params': dp}, fake_b), 0.0)
                  + mse(disc.apply({'params': dp}, b), 1.0))

  def g_terms(params, dp, a, b, k_ids_x, k_ids_y, flipped):
    gp, fp = params
    fake_b, idt_b = fakes(gp, a, b, flipped)
    terms = {'gen/adversarial': t.lambda_gan * mse(disc.apply({'params': dp}, fake_b), 1.0)}
    nce_x = nce(gp, fp, a, fake_b, k_ids_x, flipped)
    if t.nce_idt:
      terms['gen/nce_x'] = 0.5 * nce_x
      terms['gen/nce_y'] = 0.5 * nce(gp, fp, b, idt_b, k_ids_y, flipped)
    else:
      terms['gen/nce_x'] = nce_x
    return sum(terms.values()), terms

  # Compiled (`flipped` a Python bool): op by op the step takes minutes.
  d_value_and_grad = jax.jit(jax.value_and_grad(d_loss), static_argnums=4)
  g_value_and_grad = jax.jit(jax.value_and_grad(g_terms, has_aux=True), static_argnums=6)

  devices = []
  for i in range(num_devices):
    a, b = (jnp.asarray(v).reshape(num_devices, -1, *v.shape[1:])[i]
            for v in (batch['A'], batch['B']))
    k_flip, _, k_ids_x, k_ids_y, _ = _device_keys(state.rng, i)
    flipped = t.flip_equivariance and bool(jax.random.uniform(k_flip) < 0.5)
    devices.append((a, b, k_ids_x, k_ids_y, flipped))

  d_results = [d_value_and_grad(state.disc.params, state.gen.params, a, b, flipped)
               for a, b, _, _, flipped in devices]
  d_grads = mean([grads for _, grads in d_results])
  new_disc = adam(state.disc.params, d_grads)

  params = (state.gen.params, state.patch_mlp.params)
  g_results = [g_value_and_grad(params, new_disc, *device) for device in devices]
  g_grads, f_grads = mean([grads for _, grads in g_results])
  values = {name: float(np.mean([terms[name] for (_, terms), _ in g_results]))
            for name in g_results[0][0][1]}
  values['disc/loss'] = float(np.mean([loss for loss, _ in d_results]))
  new = (adam(state.gen.params, g_grads), new_disc, adam(state.patch_mlp.params, f_grads))
  return new, (g_grads, d_grads, f_grads), values


def _check_against_reference(config, batch, num_devices):
  initial, new_state, metrics = one_step.first_step(config, batch, (32, 32))
  new, grads, reference = _reference_step(config, initial, batch, num_devices)
  assert set(metrics) == {*reference, 'gen/total', 'learning_rate'}
  for name, value in reference.items():  # The loss values, not just the parameters.
    assert metrics[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
  for name, params, grad in zip(('gen', 'disc', 'patch_mlp'), new, grads):
    ours = getattr(new_state, name)
    # Adam's first moment after one step is (1 - beta1) * gradient: the
    # gradients compared directly, to float rounding of the network's largest
    # (the biases of convolutions before an instance norm have a gradient of
    # exactly 0, computed as rounding noise of a sum of larger terms).
    scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(grad))
    errors = jax.tree.map(lambda m, g: float(np.abs(m / (1 - config.train.beta1) - g).max()),
                          ours.opt_state.inner_state[0].mu, grad)
    assert max(jax.tree.leaves(errors)) < 1e-4 * scale, (name, scale, errors)
    # The first Adam step moves each parameter by about lr * sign(gradient);
    # a gradient within rounding of 0 may move either way (up to 2 lr).
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2.5 * config.train.lr),
                 ours.params, params)
    same = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b) < 1e-6, ours.params, params))
    # Nearly every parameter exactly where Adam put it.
    assert np.mean(np.concatenate([x.ravel() for x in same])) > 0.99, name


def _tiny(kind: str, folder: str):
  config = learning_comparison.tiny_config(kind)
  config.data.image_dir = folder
  return config


def _flipping_seed(config) -> int:
  """A seed whose first step flips G's input on device 0 (FastCUT)."""
  for seed in range(20):
    rng = jax.random.split(jax.random.PRNGKey(seed), 5)[0]  # create_state's base key.
    if jax.random.uniform(_device_keys(rng, 0)[0]) < 0.5:
      return seed
  raise AssertionError('no flipping seed below 20')


def _batch(config, size):
  sources = input_pipeline.open_sources(config.data)
  return input_pipeline.UnpairedBatches(sources['trainA'], sources['trainB'], config.data,
                                        config.seed, size, 0, 1).batch(0)


def test_one_step_is_the_reference_update_order(image_folder):
  """FastCUT (no identity term, lambda_NCE 10) on a seed whose first step
  flips its input, on one device; CUT (identity term, and flip equivariance
  too) is checked the same way on 4 devices below."""
  config = _tiny('fastcut', image_folder)
  config.seed = _flipping_seed(config)
  _check_against_reference(config, _batch(config, 2), num_devices=1)


FOUR_DEVICES = '''
import sys
from tests import test_cut
config = test_cut._tiny('cut', sys.argv[1])
config.train.flip_equivariance = True  # With the identity term: G's input [a, b] flipped.
test_cut._check_against_reference(config, test_cut._batch(config, 4), num_devices=4)
print('OK four devices')
'''


@pytest.mark.slow
def test_four_devices_average_per_device_gradients(image_folder):
  """Data-parallel CUT, a global batch of 4 over 4 devices: each device draws
  its own flip coin, patches and negatives from its own image, gradients
  averaged; the same as the reference step run on each device's slice (CUT
  with flip equivariance on: devices flipped and not, both NCE terms)."""
  result = subprocess.run([sys.executable, '-c', FOUR_DEVICES, image_folder], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env=xla_flags.with_cpu_devices(4))
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'OK four devices' in result.stdout


@pytest.mark.slow
def test_learns_a_colour_change(tmp_path):
  """The learning test of tests/test_learning.py (colour rotation, 64 + 64
  training images, 300 steps at 32 px). CUT must bring held-out A images much
  closer to their true B translations than leaving them is. Measured on a
  2-core CPU: mean absolute error 39.0 against 103.1 for doing nothing, a
  ratio of 0.38 (CycleGAN 0.36 in the same run; README); the test demands
  below 0.6, CycleGAN's bar."""
  root = synthetic.make_unpaired_folder(str(tmp_path / 'data'), n_train=64, n_test=16)
  result = learning_comparison.run('cut', root, 300, str(tmp_path / 'run'))
  print(result)
  assert result['error'] < 0.6 * result['do_nothing']


@pytest.mark.slow
def test_the_tools_translate_a_to_b_only(uninterrupted_cut, image_folder, tmp_path):
  """The run of the rerun test below: samples, translate (AtoB; BtoA named),
  the results page, export of the one generator, FID/KID."""
  config, workdir, state = uninterrupted_cut
  grid = input_pipeline.load_image(os.path.join(workdir, 'samples',
                                                f'step_{RERUN_STEPS:08d}.png'))
  assert grid.shape == (2 * 2 * 32, 2 * 32, 3)  # real | G(x) for 2 A then 2 B images.
  written = translate.translate_folder(workdir, os.path.join(image_folder, 'testA'),
                                       str(tmp_path / 'out'))
  assert len(written) == 4
  image = input_pipeline.load_image(os.path.join(image_folder, 'testA', '0000.png'))
  np.testing.assert_array_equal(
      input_pipeline.load_image(written[0]),
      generation.translate_image(models.create_generator(config.model), state.gen.params, image))
  with pytest.raises(ValueError, match=r'^--direction=BtoA: a CUT model translates AtoB only'):
    translate.translate_folder(workdir, os.path.join(image_folder, 'testB'),
                               str(tmp_path / 'out_b'), direction='BtoA')
  assert not os.path.exists(tmp_path / 'out_b')

  # The results page (--mode=test): real A | A->B of the test A images only.
  page = open(results_page.write_results_page(workdir, num_test=2), encoding='utf-8').read()
  assert '<h2>testA: 2 images</h2>' in page and 'testB' not in page
  assert '<th>real A</th><th>A→B</th>' in page
  assert sorted(os.listdir(os.path.join(workdir, 'results', str(RERUN_STEPS), 'images'))) == [
      f'testA_000{i}_{kind}.png' for i in range(2) for kind in ('fake', 'real')]

  # Export: the one generator, as AtoB; BtoA named.
  pytest.importorskip('onnxruntime')
  from cyclegan_jax import export  # pylint: disable=import-outside-toplevel
  import onnxruntime as ort  # pylint: disable=import-outside-toplevel
  written = export.export_workdir(workdir, str(tmp_path / 'onnx'))
  assert written == [str(tmp_path / 'onnx' / 'AtoB.onnx')]
  x = np.random.default_rng(0).uniform(-1, 1, (2, 12, 20, 3)).astype(np.float32)
  session = ort.InferenceSession(written[0], providers=['CPUExecutionProvider'])
  np.testing.assert_allclose(session.run(None, {export.INPUT_NAME: x})[0],
                             generation.generate(models.create_generator(config.model),
                                                state.gen.params, x), atol=1e-4)
  with pytest.raises(ValueError, match=r'^--direction=BtoA: a CUT model translates AtoB only'):
    export.export_workdir(workdir, str(tmp_path / 'onnx'), 'BtoA')

  # FID/KID: A->B only, the translated test A images against the real test B's.
  weights = str(tmp_path / 'inception.npz')
  inception_weights.save(weights, inception.init_variables(seed=0))
  result = evaluate.evaluate_workdir(workdir, inception_weights=weights)
  assert set(result) == {'step', 'AtoB', 'protocol'} and result['step'] == RERUN_STEPS
  assert result['AtoB']['num_fake'] == result['AtoB']['num_real'] == 4
  assert result['AtoB']['fid'] > 0


RERUN_STEPS = 12
# Every source of randomness CUT has: shuffled epochs, random B images, crops
# and flips, the flip-equivariance coin, patch ids; batch 2 and a checkpoint
# every 2 steps, so that kills land mid-save too.
RERUN_OVERRIDES = {'train.num_steps': RERUN_STEPS, 'train.batch_size': 2,
                   'train.flip_equivariance': True, 'checkpoint_every_steps': 2,
                   'keep_checkpoints': 20, 'log_every_steps': 2, 'sample_every_steps': 1000}


def _saved_state(workdir) -> dict:
  manager = ocp.CheckpointManager(checkpoints.checkpoint_dir(str(workdir)))
  assert manager.latest_step() == RERUN_STEPS
  return jax.tree.map(np.asarray, manager.restore(RERUN_STEPS,
                                                  args=ocp.args.StandardRestore()))


@pytest.fixture(scope='module')
def uninterrupted_cut(image_folder, tmp_path_factory):
  """(config, workdir, final state) of one uninterrupted RERUN_OVERRIDES run."""
  config = _tiny('cut', image_folder)
  for field, value in RERUN_OVERRIDES.items():
    section, _, name = field.rpartition('.')
    (config[section] if section else config)[name] = value
  workdir = str(tmp_path_factory.mktemp('uninterrupted_cut'))
  return config, workdir, train.train_and_evaluate(config, workdir)


@pytest.mark.slow
def test_reruns_and_sigkilled_runs_end_bit_identical(uninterrupted_cut, image_folder, tmp_path):
  config, workdir, _ = uninterrupted_cut
  first = _saved_state(workdir)
  train.train_and_evaluate(config, str(tmp_path / 'again'))
  assert test_reproducibility._identical(_saved_state(tmp_path / 'again'), first)

  workdir = tmp_path / 'killed'
  command = [sys.executable, 'main.py', '--config=configs/tiny_cut.py', f'--workdir={workdir}',
             f'--config.data.image_dir={image_folder}',
             *(f'--config.{field}={value}' for field, value in RERUN_OVERRIDES.items())]
  resumed_from = test_reproducibility.kill_after_new_checkpoints(command, workdir, 2, 0.3)
  assert resumed_from[0] == 0 and 0 < resumed_from[1] < RERUN_STEPS, resumed_from
  final = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert final.returncode == 0, final.stderr[-3000:]
  assert 'Resuming from the checkpoint at step' in final.stderr
  assert test_reproducibility._identical(_saved_state(workdir), first)


def test_the_benchmark_refuses_the_torch_comparison_by_name():
  """The benchmark times any family's step (README has CUT's numbers); its
  PyTorch baseline is CycleGAN's only."""
  from cyclegan_jax import benchmark  # pylint: disable=import-outside-toplevel
  pytest.importorskip('torch')
  with pytest.raises(ValueError, match=r"^--compare=torch: config.model.kind='cut'"):
    benchmark.run_benchmark(tiny_cut.get_config(), steps=1, warmup=0, compare='torch')
