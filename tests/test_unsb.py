"""UNSB as a family: its time grid, its train step (every network updated,
the terms of G's loss, bit-identical reruns), translation in NFE steps, its
data (a second A image per example) and its config checks. The networks
themselves: test_sb_models.py."""

import jax
import numpy as np
import pytest

from configs import tiny_unsb
from cyclegan_jax import config_checks
from cyclegan_jax import families
from cyclegan_jax import generation
from cyclegan_jax import sb_models
from cyclegan_jax import state as state_lib
from cyclegan_jax import train_step as train_step_lib
from tests import synthetic



def test_the_time_grid_is_the_official_one():
  for steps in (2, 3, 5, 8):
    # models/sb_model.py's forward(), in float64.
    incs = np.array([0] + [1 / (i + 1) for i in range(steps - 1)])
    times = np.cumsum(incs)
    times = times / times[-1]
    times = np.concatenate([np.zeros(1), 0.5 * times[-1] + 0.5 * times])
    np.testing.assert_allclose(sb_models.time_grid(steps), times, rtol=1e-7)
  np.testing.assert_allclose(sb_models.time_grid(5), [0, 0.5, 0.74, 0.86, 0.94, 1], atol=5e-3)
  np.testing.assert_array_equal(sb_models.time_grid(1), [0, 1])


def _steps(config, num_steps=2, batch_size=1):
  """(initial state, state after the steps, metrics of each step), without
  the runs axis, of `num_steps` steps of one run on one fixed batch."""
  mesh = jax.make_mesh((1, jax.device_count()), ('runs', 'data'))
  state = state_lib.create_sharded_state([config], (32, 32, 3), mesh, steps_per_epoch=10)
  initial = jax.tree.map(lambda x: np.asarray(x)[0], state)
  step = train_step_lib.make_train_step(config, mesh, state, steps_per_epoch=10)
  sharding = jax.NamedSharding(mesh, jax.P('runs', 'data'))
  rng = np.random.default_rng(0)
  batch = {d: jax.device_put(rng.integers(0, 256, (1, batch_size, 32, 32, 3), dtype=np.uint8),
                             sharding) for d in ('A', 'B', 'A2')}
  metrics = []
  for _ in range(num_steps):
    state, m = step(state, batch, {})
    metrics.append({k: float(v[0]) for k, v in jax.device_get(m).items()})
  return initial, jax.tree.map(lambda x: np.asarray(x)[0], state), metrics


def test_a_step_updates_every_network_reports_its_terms_and_reruns_bit_for_bit():
  config = tiny_unsb.get_config()
  initial, state, metrics = _steps(config)
  assert int(state.step) == 2
  for network in families.unsb.NETWORKS:
    before = jax.tree.leaves(getattr(initial, network).params)
    after = jax.tree.leaves(getattr(state, network).params)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after)), network
  terms = {'gen/adversarial', 'gen/sb', 'gen/nce_x', 'gen/nce_y'}
  for m in metrics:
    assert set(m) == terms | {'disc/loss', 'entropy/loss', 'gen/total', 'time_index',
                              'learning_rate'}
    assert all(np.isfinite(v) for v in m.values())
    assert m['time_index'] in (0, 1, 2)  # T = 3.
    np.testing.assert_allclose(m['gen/total'], sum(m[k] for k in terms), rtol=1e-5)
  # The official conditioning: the time MLP never gets a gradient.
  np.testing.assert_array_equal(state.gen.params['time_embed_0']['kernel'],
                                initial.gen.params['time_embed_0']['kernel'])
  _, again, metrics_again = _steps(config)
  assert metrics_again == metrics
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(again), strict=True):
    np.testing.assert_array_equal(a, b)
  # lambda_SB 0 drops the term (and lambda_NCE is applied twice, as the reference).
  config.train.lambda_sb, config.train.lambda_nce = 0.0, 2.0
  _, _, gated = _steps(config, num_steps=1)
  assert 'gen/sb' not in gated[0]
  assert gated[0]['gen/nce_x'] > 3 * metrics[0]['gen/nce_x']  # 2 x 2 = 4 times, about.


def _tiny_generator(num_images: int, seed: int):
  """(tiny UNSB generator, its parameters scaled up from the tiny init so
  that every step shows, num_images random images)."""
  generator = families.unsb.create_generators(tiny_unsb.get_config().model)['gen']
  x = np.random.default_rng(seed).uniform(-1, 1, (num_images, 32, 32, 3)).astype(np.float32)
  params = generator.init(jax.random.PRNGKey(0), x, np.zeros(num_images, np.int32),
                          np.zeros((num_images, 32), np.float32))['params']
  return generator, jax.tree.map(lambda p: p * 30 if p.ndim > 1 else p, params), x


def test_a_translation_takes_nfe_steps_and_is_the_same_every_time():
  generator, params, x = _tiny_generator(2, 1)
  outputs = {}
  for nfe in (1, 2, 3):
    module = generator.clone(nfe=nfe)
    outputs[nfe] = np.asarray(generation.generate(module, params, x))
    np.testing.assert_array_equal(generation.generate(module, params, x), outputs[nfe])
  assert outputs[1].shape == x.shape
  # The bridge's noise (tau) enters from the second step on.
  for nfe in (1, 2):
    noisier = np.asarray(generation.generate(generator.clone(nfe=nfe, tau=1.0), params, x))
    assert (np.abs(noisier - outputs[nfe]).max() > 1e-3) == (nfe == 2)
  assert np.abs(outputs[2] - outputs[1]).max() > 1e-3
  assert np.abs(outputs[3] - outputs[2]).max() > 1e-3
  # nfe 0: all T = 3 steps.
  np.testing.assert_array_equal(generation.generate(generator, params, x), outputs[3])


def test_batches_hold_a_second_a_image_per_example(tmp_path):
  root = synthetic.make_unpaired_folder(str(tmp_path), n_train=6, n_test=2)
  config = tiny_unsb.get_config()
  config.data.image_dir = root
  batches, _, _ = families.unsb.open_training_data(config, (0, 2, 0, 1), {'A': 3, 'B': 3})
  batch = batches.batch(3)
  assert set(batch) == {'A', 'B', 'A2'}
  assert batch['A2'].shape == batch['A'].shape and batch['A2'].dtype == np.uint8
  again = families.unsb.open_training_data(config, (0, 2, 0, 1), {'A': 3, 'B': 3})[0].batch(3)
  np.testing.assert_array_equal(again['A2'], batch['A2'])
  assert any(not np.array_equal(batches.batch(s)['A2'], batches.batch(s)['A']) for s in range(3))


@pytest.mark.parametrize('field,value,expected', [
    ('model.unsb_num_timesteps', 0, 'an integer >= 1'),
    ('model.unsb_tau', -0.1, 'a number >= 0'),
    ('model.unsb_nfe', 4, 'an integer from 1 to model.unsb_num_timesteps=3 (0: all)'),
    ('model.unsb_time_conditioning', 'maybe', 'one of official, fixed'),
    ('train.lambda_sb', -1.0, 'a number >= 0'),
    ('model.discriminator', 'pixel', "'basic' or 'n_layers' for UNSB")])
def test_bad_fields_are_one_line_naming_them(field, value, expected):
  config = tiny_unsb.get_config()
  config.data.image_dir = 'somewhere'
  section, name = field.split('.')
  setattr(getattr(config, section), name, value)
  with pytest.raises(ValueError, match=f'^config.{field}={value!r}: expected '
                     + expected.replace('(', r'\(').replace(')', r'\)')):
    config_checks.validate(config, num_devices=1)


def test_every_step_gives_each_nfe_and_each_image_its_own_noise():
  """every_step's n-th translation is the nfe=n chain's; an image's
  translation is the same in any batch (noise and z drawn per image), and
  another seed gives another translation."""
  generator, params, x = _tiny_generator(3, 2)
  every = np.asarray(generation.generate_every_step(generator, params, x))
  assert every.shape == (3, 3, 32, 32, 3)
  for nfe in (1, 2, 3):
    np.testing.assert_allclose(every[:, nfe - 1],
                               generation.generate(generator.clone(nfe=nfe), params, x),
                               atol=1e-6)
  alone = np.concatenate([generation.generate(generator, params, x[i:i + 1]) for i in range(3)])
  # Equal up to the rounding of convolutions of another batch size (1e-5 here).
  np.testing.assert_allclose(generation.generate(generator, params, x), alone, atol=1e-4)
  reseeded = np.asarray(generation.generate(generator.clone(seed=1), params, x))
  assert np.abs(reseeded - every[:, -1]).max() > 1e-3


def test_nfe_and_seed_are_checked_in_one_line():
  from configs import tiny  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import inference  # pylint: disable=import-outside-toplevel
  config = tiny_unsb.get_config()
  generator = families.unsb.create_generators(config.model)['gen']
  assert inference.with_sampling(generator, config, 2, 7).nfe == 2
  assert inference.with_sampling(generator, config, None, 7).seed == 7
  for nfe in (0, 4):
    with pytest.raises(ValueError, match=rf'^--nfe={nfe}: expected 1 to 3 \(the model\'s '
                       r'model.unsb_num_timesteps=3 steps\)$'):
      inference.with_sampling(generator, config, nfe)
  cyclegan = tiny.get_config()
  module = families.get(cyclegan).create_generators(cyclegan.model)['gen_ab']
  for flag, args in (('--nfe=2', (2, None)), ('--seed=1', (None, 1))):
    with pytest.raises(ValueError, match=f'^{flag}: a cyclegan model translates in one step '):
      inference.with_sampling(module, cyclegan, *args)
  assert inference.with_sampling(module, cyclegan) is module


_TWO_DEVICES = '''
import json
import jax
from configs import tiny_unsb
from tests import test_unsb
config = tiny_unsb.get_config()
config.train.batch_size = 2
_, _, metrics = test_unsb._steps(config, num_steps=4, batch_size=2)
print(json.dumps([jax.device_count(), metrics]))
'''


def test_on_two_devices_every_device_trains_the_same_step_index():
  """Data-parallel UNSB: k is drawn before the device index is folded in, so
  both devices train the same k (the mean of k over the devices, logged,
  stays a whole number), and a rerun is bit for bit the same."""
  import json  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  from tests import xla_flags  # pylint: disable=import-outside-toplevel
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = xla_flags.with_cpu_devices(2, os.environ.get('XLA_FLAGS', ''))
  runs = []
  for _ in range(2):
    result = subprocess.run([sys.executable, '-c', _TWO_DEVICES], cwd=repo, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
  (devices, metrics), again = runs
  assert devices == 2 and again == runs[0]
  indices = [m['time_index'] for m in metrics]
  assert all(i in (0.0, 1.0, 2.0) for i in indices), indices
  assert all(np.isfinite(v) for m in metrics for v in m.values())
