"""pix2pix end to end: a short run, the official update order, translate, and
a paired task it must learn."""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import tiny_pix2pix
from cyclegan_jax import generation
from cyclegan_jax import families
from cyclegan_jax.data import input_pipeline
from cyclegan_jax import losses
from cyclegan_jax import models
from cyclegan_jax.data import paired_data
from cyclegan_jax import train
from tests import one_step
from tests import synthetic
from tests import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def aligned_folder(tmp_path_factory):
  return synthetic.make_aligned_folder(str(tmp_path_factory.mktemp('aligned')), n_train=8,
                                       n_test=3)


@pytest.fixture(scope='module')
def trained(aligned_folder, tmp_path_factory):
  """A 4-step pix2pix run, BtoA as the official facades."""
  config = tiny_pix2pix.get_config()
  config.data.image_dir = aligned_folder
  config.data.direction = 'BtoA'
  workdir = str(tmp_path_factory.mktemp('run'))
  return config, workdir, train.train_and_evaluate(config, workdir)


def test_short_run_writes_checkpoints_samples_and_config(trained):
  config, workdir, state = trained
  assert isinstance(state, families.pix2pix.State) and int(state.step) == 4
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4']
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['model']['kind'] == 'pix2pix'
  # Sample grid: num_samples rows of input | output | target, 32px each.
  grid = os.path.join(workdir, 'samples', 'step_00000004.png')
  assert input_pipeline.load_image(grid).shape == (2 * 32, 3 * 32, 3)
  assert models.count_params(state.disc.params) > 0
  assert state.disc.params['Conv_0']['kernel'].shape[2] == 6  # Judges (input, output) pairs.


def _reference_step(config, state, batch, num_devices):
  """One pix2pix step as the official `optimize_parameters` does it, written
  out with Optax: D on (x, y) vs (x, G(x)), then G through the updated D plus
  100 x L1. With several devices each takes its slice of the batch (batch
  norm over its own images, its own dropout key) and the gradients are
  averaged. Returns (gen params, disc params, losses)."""
  gen, disc = models.create_generator(config.model), models.create_discriminator(config.model)
  tx = optax.adam(config.train.lr, b1=config.train.beta1, b2=config.train.beta2)
  bce = lambda pred, real: losses.gan_loss(pred, real, 'vanilla')
  G = lambda p, x, key: gen.apply({'params': p}, x, train=True, rngs={'dropout': key})
  D = lambda p, x, out: disc.apply({'params': p}, jnp.concatenate([x, out], -1))

  def d_loss(disc_params, gen_params, x, y, key):
    return 0.5 * (bce(D(disc_params, x, y), True) +
                  bce(D(disc_params, x, G(gen_params, x, key)), False))

  def g_loss(gen_params, disc_params, x, y, key):
    fake = G(gen_params, x, key)
    adversarial, l1 = bce(D(disc_params, x, fake), True), 100 * jnp.mean(jnp.abs(fake - y))
    return adversarial + l1, (adversarial, l1)

  # Compiled, not run op by op (an eager step took a minute); every device's
  # slice has the same shape, so each function compiles once. Adam too: op by
  # op, each parameter's shape compiles its own small programs.
  d_value_and_grad = jax.jit(jax.value_and_grad(d_loss))
  g_value_and_grad = jax.jit(jax.value_and_grad(g_loss, has_aux=True))
  devices = []
  for i in range(num_devices):
    x, y = (jnp.asarray(v).reshape(num_devices, -1, *v.shape[1:])[i]
            for v in (batch['A'], batch['B']))  # AtoB.
    devices.append((x, y, jax.random.fold_in(jax.random.fold_in(state.rng, 0), i)))
  mean = jax.jit(lambda trees: jax.tree.map(lambda *v: sum(v) / len(v), *trees))
  adam = jax.jit(lambda params, grads: optax.apply_updates(
      params, tx.update(grads, tx.init(params), params)[0]))

  d_results = [d_value_and_grad(state.disc.params, state.gen.params, *d) for d in devices]
  new_disc = adam(state.disc.params, mean([grads for _, grads in d_results]))
  g_results = [g_value_and_grad(state.gen.params, new_disc, *d) for d in devices]
  new_gen = adam(state.gen.params, mean([grads for _, grads in g_results]))
  values = {'disc/loss': [loss for loss, _ in d_results],
            'gen/adversarial': [terms[0] for (_, terms), _ in g_results],
            'gen/l1': [terms[1] for (_, terms), _ in g_results]}
  return new_gen, new_disc, {k: float(np.mean(v)) for k, v in values.items()}


def _check_against_reference(config, batch, num_devices, tolerance):
  initial, new_state, metrics = one_step.first_step(config, batch, (32, 32, 3))
  new_gen, new_disc, reference = _reference_step(config, initial, batch, num_devices)
  assert set(metrics) == {'gen/adversarial', 'gen/l1', 'gen/total', 'disc/loss',
                          'learning_rate'}
  for name, value in reference.items():  # The loss values, not just the parameters.
    assert abs(metrics[name] - value) < tolerance * max(1.0, abs(value)), (name, metrics[name],
                                                                         value)
  for ours, theirs in ((new_state.disc.params, new_disc), (new_state.gen.params, new_gen)):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=tolerance), ours, theirs)


def _batch(folder, size):
  config = tiny_pix2pix.get_config()
  config.data.image_dir = folder
  source = paired_data.open_paired_sources(config.data)['train']
  return config, paired_data.PairedBatches(source, config.data, 0, size).batch(0)


def test_the_discriminator_updates_first_and_the_generator_sees_the_updated_one(
    aligned_folder):
  config, batch = _batch(aligned_folder, 1)
  # 1e-5, as on 4 devices: the sub-pixel up-convolutions sum the same products in
  # another order, and Adam's first step turns a near-zero gradient's rounding into
  # a few 1e-6 (one kernel entry of 8192 moved by 3.7e-6).
  _check_against_reference(config, batch, num_devices=1, tolerance=1e-5)


def _main(*args):
  return subprocess.run([sys.executable, 'main.py', *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300)


@pytest.mark.slow
def test_translate_uses_the_trained_direction(trained, aligned_folder, tmp_path):
  config, workdir, state = trained
  inputs = tmp_path / 'inputs'
  os.makedirs(inputs)
  pair = paired_data.AlignedSource(os.path.join(aligned_folder, 'test'))[0]
  input_pipeline.Image.fromarray(pair[1]).save(inputs / 'label.png')  # BtoA: B is the input.
  result = _main('--mode=translate', f'--workdir={workdir}', f'--input={inputs}',
                 f'--output={tmp_path / "out"}')
  assert result.returncode == 0, result.stderr[-2000:]
  output = input_pipeline.load_image(str(tmp_path / 'out' / 'label.png'))
  expected = generation.translate_image(models.create_generator(config.model),
                                       state.gen.params, pair[1])
  np.testing.assert_array_equal(output, expected)  # Test-time dropout from a fixed key.
  result = _main('--mode=translate', f'--workdir={workdir}', f'--input={inputs}',
                 f'--output={tmp_path / "out2"}', '--direction=AtoB')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      'error: --direction=AtoB: this pix2pix model was trained for BtoA only '
      '(config.data.direction)')


@pytest.mark.slow
def test_learns_a_paired_colour_change(tmp_path):
  """The synthetic colour rotation of tests/test_learning.py, now paired:
  translated held-out A images must land much closer to their B partners
  than the A images themselves are. Measured on a 2-core CPU (about 10 s):
  mean absolute error 26.5 (of 255) against 97.8 for doing nothing, a ratio
  of 0.27 (0.27 after 300 steps too); the test demands below 0.45."""
  root = synthetic.make_aligned_folder(str(tmp_path / 'data'), n_train=64, n_test=16)
  config = tiny_pix2pix.get_config()
  config.data.image_dir = root
  config.train.num_steps = 200
  config.log_every_steps = 100
  config.sample_every_steps = config.checkpoint_every_steps = 1000
  state = train.train_and_evaluate(config, str(tmp_path / 'run'))

  pairs = paired_data.AlignedSource(os.path.join(root, 'test'))
  generator = models.create_generator(config.model)
  errors, do_nothing = [], []
  for a, b in (pairs[i] for i in range(len(pairs))):
    translated = generation.translate_image(generator, state.gen.params, a).astype(np.float32)
    errors.append(np.abs(translated - b).mean())
    do_nothing.append(np.abs(a.astype(np.float32) - b).mean())
  error, baseline = float(np.mean(errors)), float(np.mean(do_nothing))
  print(f'A->B mean abs error {error:.1f}, doing nothing {baseline:.1f}, '
        f'ratio {error / baseline:.3f}')
  assert error < 0.45 * baseline


FOUR_DEVICES = '''
import sys
from tests import test_pix2pix
config, batch = test_pix2pix._batch(sys.argv[1], 4)
test_pix2pix._check_against_reference(config, batch, num_devices=4, tolerance=1e-5)
print('OK four devices')
'''


@pytest.mark.slow
def test_four_devices_average_per_device_gradients(aligned_folder):
  """Data-parallel pix2pix, a global batch of 4 over 4 devices: the step
  equals the official step run on each device's image alone (its own batch
  norm statistics and dropout mask), gradients averaged."""
  result = subprocess.run([sys.executable, '-c', FOUR_DEVICES, aligned_folder], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env=xla_flags.with_cpu_devices(4))
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'OK four devices' in result.stdout


def test_wgangp_adds_the_gradient_penalty(aligned_folder):
  config, batch = _batch(aligned_folder, 1)
  config.train.gan_mode = 'wgangp'
  _, _, with_penalty = one_step.first_step(config, batch, (32, 32, 3))
  config.train.lambda_gp = 0.0
  _, _, without = one_step.first_step(config, batch, (32, 32, 3))
  assert with_penalty['disc/loss'] > without['disc/loss'] + 1e-3


TWO_PROCESSES = '''
import sys
import jax, numpy as np
from configs import tiny_pix2pix
from cyclegan_jax import distributed, train
image_dir, workdir, out, port, process_id = sys.argv[1:]
distributed.initialize(f'127.0.0.1:{port}', 2, int(process_id))
config = tiny_pix2pix.get_config()
config.data.image_dir = image_dir
config.train.batch_size = 4
config.train.num_steps = 2
state = train.train_and_evaluate(config, workdir)
leaves = jax.tree.leaves((state.gen.params, state.disc.params))
np.savez(out, *[np.asarray(leaf.addressable_data(0)) for leaf in leaves])
print('devices', jax.process_index(), jax.process_count(), jax.device_count())
'''


@pytest.mark.slow
def test_two_processes_train_one_model(aligned_folder, tmp_path):
  """Two processes of 2 CPU devices each, each reading its own shard of the
  pairs, end with the same parameters."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  env = xla_flags.with_cpu_devices(2)
  processes = [subprocess.Popen(
      [sys.executable, '-c', TWO_PROCESSES, aligned_folder, str(tmp_path / 'run'),
       str(tmp_path / f'p{i}.npz'), str(port), str(i)], cwd=REPO, env=env,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  for i, process in enumerate(processes):
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    assert f'devices {i} 2 4' in output
  p0, p1 = (np.load(tmp_path / f'p{i}.npz') for i in range(2))
  assert len(p0.files) > 10 and all(np.array_equal(p0[k], p1[k]) for k in p0.files)
