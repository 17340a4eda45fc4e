import glob
import importlib.util
import os

import jax
import numpy as np
import pytest

from configs import tiny
from cyclegan_jax import state as state_lib
from cyclegan_jax import train_step as train_step_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_steps(config, num_steps=2):
  mesh = jax.make_mesh((jax.device_count(),), ('data',))
  schedule = state_lib.learning_rate_schedule(config.train, steps_per_epoch=1)
  state = state_lib.create_sharded_state(config, (32, 32, 3), mesh, schedule)
  step = train_step_lib.make_train_step(config, mesh, state, schedule)
  sharding = jax.NamedSharding(mesh, jax.P('data'))
  rng = np.random.default_rng(0)
  for _ in range(num_steps):
    batch = {d: jax.device_put(rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32), sharding)
             for d in 'AB'}
    state, metrics = step(state, batch)
  return state, jax.device_get(metrics)


@pytest.mark.parametrize('gan_mode,pool_size,lambda_identity', [
    ('lsgan', 50, 0.5), ('vanilla', 0, 0.5), ('wgangp', 3, 0.0)])
def test_step_updates_everything_and_reports_every_loss(gan_mode, pool_size, lambda_identity):
  config = tiny.get_config()
  config.train.update(gan_mode=gan_mode, pool_size=pool_size, lambda_identity=lambda_identity,
                      batch_size=2)
  state, metrics = _run_steps(config)
  assert int(state.step) == 2
  expected = {'gen_ab/adversarial', 'gen_ba/adversarial', 'cycle/aba', 'cycle/bab',
              'disc_a/loss', 'disc_b/loss', 'gen/total', 'learning_rate'}
  if lambda_identity:
    expected |= {'identity/ab', 'identity/ba'}
  if gan_mode == 'wgangp':
    expected |= {'disc_a/gradient_penalty', 'disc_b/gradient_penalty'}
  assert set(metrics) == expected
  assert all(np.isfinite(v) for v in metrics.values())
  np.testing.assert_allclose(metrics['gen/total'], sum(
      metrics[k] for k in expected if k.split('/')[0] in ('gen_ab', 'gen_ba', 'cycle',
                                                          'identity')), rtol=1e-5)
  # Two steps of two images, in a pool of pool_size.
  np.testing.assert_array_equal(state.pool_fake_a.num_stored, [min(4, pool_size)])
  assert state.pool_fake_b.images.shape[1] == pool_size


def test_every_task_config_loads():
  tasks = [os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, 'configs', '*.py'))]
  tasks = [t for t in tasks if t not in ('__init__', 'default', 'tiny', 'quickstart')]
  assert len(tasks) == 10
  for task in tasks:
    spec = importlib.util.spec_from_file_location(task, os.path.join(REPO, 'configs', f'{task}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.get_config().data.tfds_name == f'cycle_gan/{task}'
