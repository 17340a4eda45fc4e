"""pix2pix end to end: a short run, the official update order, translate, and
a paired task it must learn."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import tiny_pix2pix
from cyclegan_jax import input_pipeline
from cyclegan_jax import losses
from cyclegan_jax import models
from cyclegan_jax import paired_data
from cyclegan_jax import state as state_lib
from cyclegan_jax import train
from cyclegan_jax import train_step as train_step_lib
from cyclegan_jax import translate
from tests import synthetic

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
  assert isinstance(state, state_lib.Pix2PixState) and int(state.step) == 4
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4']
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['model']['kind'] == 'pix2pix'
  # Sample grid: num_samples rows of input | output | target, 32px each.
  grid = os.path.join(workdir, 'samples', 'step_00000004.png')
  assert input_pipeline.load_image(grid).shape == (2 * 32, 3 * 32, 3)
  assert models.count_params(state.disc.params) > 0
  assert state.disc.params['Conv_0']['kernel'].shape[2] == 6  # Judges (input, output) pairs.


def test_the_discriminator_updates_first_and_the_generator_sees_the_updated_one(
    aligned_folder):
  """One step against the official `optimize_parameters`, written out here
  with Optax: D on (x, y) vs (x, G(x)); then G on the new D, plus 100 x L1."""
  config = tiny_pix2pix.get_config()
  config.data.image_dir = aligned_folder
  mesh = jax.make_mesh((1,), ('data',))
  schedule = optax.constant_schedule(config.train.lr)
  state = state_lib.create_sharded_state(config, (32, 32, 3), mesh, schedule)
  batches = paired_data.PairedBatches(paired_data.open_paired_sources(config.data)['train'],
                                      config.data, 0, 1)
  batch = batches.batch(0)
  x, y = jnp.asarray(batch['A']), jnp.asarray(batch['B'])  # AtoB.
  key = jax.random.fold_in(jax.random.fold_in(state.rng, 0), 0)
  gen, disc = models.create_generator(config.model), models.create_discriminator(config.model)
  G = lambda p: gen.apply({'params': p}, x, train=True, rngs={'dropout': key})
  D = lambda p, out: disc.apply({'params': p}, jnp.concatenate([x, out], -1))
  tx = state_lib.create_optimizer(config.train, schedule)
  bce = lambda pred, real: losses.gan_loss(pred, real, 'vanilla')

  fake = G(state.gen.params)
  d_grads = jax.grad(lambda p: 0.5 * (bce(D(p, y), True) + bce(D(p, fake), False)))(
      state.disc.params)
  updates, _ = tx.update(d_grads, tx.init(state.disc.params), state.disc.params)
  new_disc = optax.apply_updates(state.disc.params, updates)
  g_grads = jax.grad(lambda p: bce(D(new_disc, G(p)), True) + 100 * jnp.mean(jnp.abs(G(p) - y)))(
      state.gen.params)
  updates, _ = tx.update(g_grads, tx.init(state.gen.params), state.gen.params)
  new_gen = optax.apply_updates(state.gen.params, updates)

  step = train_step_lib.make_train_step(config, mesh, state, schedule)
  sharding = jax.NamedSharding(mesh, jax.P('data'))
  new_state, metrics = step(state, {k: jax.device_put(v, sharding) for k, v in batch.items()})
  assert set(metrics) == {'gen/adversarial', 'gen/l1', 'gen/total', 'disc/loss',
                          'learning_rate'}
  for ours, reference in ((new_state.disc.params, new_disc), (new_state.gen.params, new_gen)):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), ours, reference)


def _main(*args):
  return subprocess.run([sys.executable, 'main.py', *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300)


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
  expected = translate.translate_image(models.create_generator(config.model),
                                       state.gen.params, pair[1])
  np.testing.assert_array_equal(output, expected)  # Test-time dropout from a fixed key.
  result = _main('--mode=translate', f'--workdir={workdir}', f'--input={inputs}',
                 f'--output={tmp_path / "out2"}', '--direction=AtoB')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      'error: --direction=AtoB: this pix2pix model was trained for BtoA only '
      '(config.data.direction)')


def test_learns_a_paired_colour_change(tmp_path):
  """The synthetic colour rotation of tests/test_learning.py, now paired:
  translated held-out A images must land much closer to their B partners
  than the A images themselves are. Measured on a 2-core CPU (about 30 s):
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
    translated = translate.translate_image(generator, state.gen.params, a).astype(np.float32)
    errors.append(np.abs(translated - b).mean())
    do_nothing.append(np.abs(a.astype(np.float32) - b).mean())
  error, baseline = float(np.mean(errors)), float(np.mean(do_nothing))
  print(f'A->B mean abs error {error:.1f}, doing nothing {baseline:.1f}, '
        f'ratio {error / baseline:.3f}')
  assert error < 0.45 * baseline
