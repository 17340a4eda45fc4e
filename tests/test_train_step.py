import glob
import importlib.util
import os

import jax
import numpy as np
import pytest

from configs import tiny
from cyclegan_jax import models
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
  expected_shardings = [x.sharding for x in jax.tree.leaves(state)]
  for _ in range(num_steps):
    batch = {d: jax.device_put(rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32), sharding)
             for d in 'AB'}
    state, metrics = step(state, batch)
    # The new state comes back in the shardings it went in with, so the next
    # step reuses the compiled program instead of compiling a second one.
    assert [x.sharding for x in jax.tree.leaves(state)] == expected_shardings
  assert step._cache_size() == 1  # pylint: disable=protected-access
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
  assert (state.pool_fake_b.images is None if pool_size == 0 else
          state.pool_fake_b.images.shape[1] == pool_size)


def test_every_task_config_loads():
  tasks = [os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, 'configs', '*.py'))]
  tasks = [t for t in tasks if t not in ('__init__', 'default', 'tiny', 'quickstart')
           and not t.startswith(('pix2pix', 'tiny_', 'cut', 'fastcut', 'quickstart_'))]
  assert len(tasks) == 10
  for task in tasks:
    spec = importlib.util.spec_from_file_location(task, os.path.join(REPO, 'configs', f'{task}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.get_config().data.tfds_name == f'cycle_gan/{task}'
  for task in ('facades', 'maps', 'edges2shoes', 'cityscapes'):  # pix2pix: image folders.
    config = importlib.import_module(f'configs.pix2pix_{task}').get_config()
    assert config.model.kind == 'pix2pix' and config.data.image_dir == f'datasets/{task}'
  for name, nce_idt, lambda_nce in (('cut_horse2zebra', True, 1.0),
                                    ('fastcut_horse2zebra', False, 10.0)):
    config = importlib.import_module(f'configs.{name}').get_config()
    assert config.model.kind == 'cut' and config.data.tfds_name == 'cycle_gan/horse2zebra'
    assert (config.train.nce_idt, config.train.lambda_nce) == (nce_idt, lambda_nce)
    assert config.train.flip_equivariance == (not nce_idt)


def _primitive_dtypes(jaxpr, names) -> set[tuple[str, str]]:
  """(primitive, first operand dtype) for every equation of those primitives,
  nested jaxprs (scans, shard_map, pjit, custom_vjp) included."""
  found = set()
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in names:
      found.add((eqn.primitive.name, str(eqn.invars[0].aval.dtype)))
    for sub in jax.core.jaxprs_in_params(eqn.params):
      found |= _primitive_dtypes(sub, names)
  return found


def test_bfloat16_trains_with_float32_parameters_and_statistics():
  config = tiny.get_config()
  config.train.batch_size = 2
  f32_state, f32_metrics = _run_steps(config)
  config.model.dtype = 'bfloat16'
  state, metrics = _run_steps(config)
  assert int(state.step) == 2
  # Parameters, Adam moments and pools stay float32 ...
  assert {x.dtype for x in jax.tree.leaves((state.gen_ab, state.disc_b, state.pool_fake_a))
          if np.issubdtype(x.dtype, np.floating)} == {np.dtype('float32')}
  assert all(np.isfinite(v) for v in metrics.values())
  moved = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
                       state.gen_ab.params, f32_state.gen_ab.params)
  assert 0 < max(jax.tree.leaves(moved)) < 1e-2  # Trains, and close to the float32 run.
  for key in ('cycle/aba', 'disc_b/loss', 'gen_ab/adversarial'):
    np.testing.assert_allclose(metrics[key], f32_metrics[key], rtol=0.05)
  # ... while convolutions run in bfloat16 and instance-norm statistics in float32.
  generator = models.create_generator(config.model)
  jaxpr = jax.make_jaxpr(lambda p, x: generator.apply({'params': p}, x))(
      state.gen_ab.params, np.zeros((1, 32, 32, 3), np.float32))
  ops = _primitive_dtypes(jaxpr.jaxpr, ('conv_general_dilated', 'reduce_sum'))
  assert ops == {('conv_general_dilated', 'bfloat16'), ('reduce_sum', 'float32')}, ops
  assert jaxpr.out_avals[0].dtype == np.float32
  with pytest.raises(ValueError, match="config.model.dtype='float16': expected one of"):
    config.model.dtype = 'float16'
    models.create_generator(config.model)
