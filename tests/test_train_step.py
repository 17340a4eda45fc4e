import glob
import importlib.util
import os

import jax
import numpy as np
import pytest

from configs import tiny
from configs import tiny_cut
from cyclegan_jax import models
from cyclegan_jax import state as state_lib
from cyclegan_jax import train_step as train_step_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_steps(config, num_steps=2):
  """(state without its runs axis, metrics of the last step) after
  `num_steps` steps of one run on every device."""
  mesh = jax.make_mesh((1, jax.device_count()), ('runs', 'data'))
  state = state_lib.create_sharded_state([config], (32, 32, 3), mesh, steps_per_epoch=1)
  step = train_step_lib.make_train_step(config, mesh, state, steps_per_epoch=1)
  sharding = jax.NamedSharding(mesh, jax.P('runs', 'data'))
  rng = np.random.default_rng(0)
  expected_shardings = [x.sharding for x in jax.tree.leaves(state)]
  for _ in range(num_steps):
    batch = {d: jax.device_put(rng.uniform(-1, 1, (1, 2, 32, 32, 3)).astype(np.float32),
                               sharding) for d in 'AB'}
    state, metrics = step(state, batch, {})
    # The new state comes back in the shardings it went in with, so the next
    # step reuses the compiled program instead of compiling a second one.
    assert [x.sharding for x in jax.tree.leaves(state)] == expected_shardings
  assert step._cache_size() == 1  # pylint: disable=protected-access
  return (state_lib.without_runs_axis(state, mesh),
          jax.tree.map(lambda x: x[0], jax.device_get(metrics)))


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
           and not t.startswith(('pix2pix', 'tiny_', 'cut', 'fastcut', 'unsb', 'quickstart_'))]
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
  unsb = importlib.import_module('configs.unsb_horse2zebra').get_config()
  assert unsb.model.kind == 'unsb' and unsb.data.tfds_name == 'cycle_gan/horse2zebra'
  assert (unsb.train.lambda_sb, unsb.train.lambda_nce, unsb.model.unsb_num_timesteps) == (
      1.0, 1.0, 5)


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


# The official step (cyclegan_jax/torch_reference.py, junyanz's
# CycleGANModel.optimize_parameters) and ours from the same weights and
# batches. Names: official G_A is our gen_ab, G_B gen_ba; official D_A judges
# domain B (our disc_b), D_B domain A (our disc_a).
OFFICIAL_NETWORKS = {'netG_A': 'gen_ab', 'netG_B': 'gen_ba', 'netD_A': 'disc_b',
                     'netD_B': 'disc_a'}
OFFICIAL_LOSSES = {'G_A': 'gen_ab/adversarial', 'G_B': 'gen_ba/adversarial',
                   'cycle_A': 'cycle/aba', 'cycle_B': 'cycle/bab', 'idt_A': 'identity/ab',
                   'idt_B': 'identity/ba', 'D_A': 'disc_b/loss', 'D_B': 'disc_a/loss'}


def _official_params(net, like) -> dict:
  """A torch network's weights as Flax params shaped like `like`: generators
  through torch_import's names; a PatchGAN's convolutions in order (Conv_i)."""
  import flax.traverse_util  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import torch_import  # pylint: disable=import-outside-toplevel
  state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
  flat = flax.traverse_util.flatten_dict(like)
  if ('Conv_0', 'kernel') in flat and ('ResnetBlock_0', 'Conv_0', 'kernel') not in flat:
    convs = sorted({k.rsplit('.', 1)[0] for k in state}, key=lambda k: int(k.split('.')[1]))
    names = {f'{module}.{leaf}': (f'Conv_{i}', {'weight': 'kernel', 'bias': 'bias'}[leaf])
             for i, module in enumerate(convs) for leaf in ('weight', 'bias')}
  else:
    names = torch_import.parameter_names(_generator(), flat)
  params = {}
  for key, path in names.items():
    value = state[key]
    params[path] = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
  assert set(params) == set(flat)
  return flax.traverse_util.unflatten_dict(params)


def _generator():
  from cyclegan_jax import families  # pylint: disable=import-outside-toplevel
  return families.get(tiny.get_config()).create_generators(tiny.get_config().model)['gen_ab']


# Biases of convolutions followed by an instance norm (which subtracts the
# mean, so they change no output): their gradients are rounding noise, which
# Adam's normalisation lifts to updates of any size up to the learning rate.
def _cancelled_by_norm(network: str, path: tuple) -> bool:
  if path[-1] != 'bias':
    return False
  if network.startswith('disc'):
    return path[0] not in ('Conv_0', 'Conv_4')
  return path[-2] != 'Conv_3'


@pytest.mark.parametrize('pool_size', [0, 1])
def test_one_and_three_steps_agree_with_the_official_step(pool_size):
  """From the same initial weights and batches, the tiny CycleGAN's losses
  and weights after one and three steps equal the official step's within
  float32 rounding: losses rtol 1e-4; all but 0.01% of each network's
  weights within 1e-6 (a 200th of one Adam step of 2e-4), the rest within
  one Adam step per step taken (a gradient near 0 whose sign rounding flips
  moves Adam's update by up to a step); the biases an instance norm cancels
  (see above) are left out.
  A pool of 1 is full from the second step on, where each side chooses at
  random: the official pool here replays the choices our pool made, read
  from which stored image our step replaced (both kinds of choice occur)."""
  torch = pytest.importorskip('torch')
  import flax.traverse_util  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import torch_reference  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  config = tiny.get_config()
  config.train.update(pool_size=pool_size, batch_size=1, num_steps=1000)  # lr constant.
  official = torch_reference.CycleGAN(ngf=8, ndf=8, n_blocks=2, pool_size=pool_size)

  mesh = jax.make_mesh((1, 1), ('runs', 'data'), devices=jax.devices()[:1])
  state = state_lib.without_runs_axis(
      state_lib.create_sharded_state([config], (32, 32, 3), mesh, steps_per_epoch=1), mesh)
  replicated = jax.NamedSharding(mesh, jax.P())
  state = state_lib.with_runs_axis(state.replace(**{
      ours: getattr(state, ours).replace(params=jax.device_put(
          _official_params(getattr(official, name), getattr(state, ours).params), replicated))
      for name, ours in OFFICIAL_NETWORKS.items()}), mesh)
  step = train_step_lib.make_train_step(config, mesh, state, steps_per_epoch=1)
  sharding = jax.NamedSharding(mesh, jax.P('runs', 'data'))
  one_run = lambda tree: jax.tree.map(lambda x: np.asarray(x)[0], tree)

  rng = np.random.default_rng(0)
  choices = set()  # Of full pools: a stored image returned (True) or the new one.
  for done in (1, 2, 3):
    a, b = (rng.uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32) for _ in 'AB')
    pools = {d: one_run(getattr(state, f'pool_fake_{d}').images) if pool_size else None
             for d in 'ab'}
    state, metrics = step(state, {'A': jax.device_put(a[None], sharding),
                                  'B': jax.device_put(b[None], sharding)}, {})
    if pool_size:
      for official_pool, d in ((official.pool_A, 'a'), (official.pool_B, 'b')):
        before, after = pools[d][0], one_run(getattr(state, f'pool_fake_{d}').images)[0]
        changed = [i for i in range(pool_size) if not np.array_equal(before[i], after[i])]
        official_pool.draw = lambda changed=changed: changed[0] if changed else None
        if done > pool_size:
          choices.add(bool(changed))
    to_torch = lambda x: torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    official_losses = official.optimize_parameters(to_torch(a), to_torch(b))

    metrics = one_run(metrics)
    for name, value in official_losses.items():
      np.testing.assert_allclose(metrics[OFFICIAL_LOSSES[name]], value.item(), rtol=1e-4,
                                 err_msg=f'step {done}: {name}')
    if done in (1, 3):
      for name, ours in OFFICIAL_NETWORKS.items():
        expected = flax.traverse_util.flatten_dict(
            _official_params(getattr(official, name), getattr(state, ours).params))
        got = flax.traverse_util.flatten_dict(one_run(getattr(state, ours).params))
        diffs = np.concatenate([np.abs(value - expected[path]).ravel()
                                for path, value in got.items()
                                if not _cancelled_by_norm(ours, path)])
        where = f'step {done}: {ours}'
        assert np.mean(diffs > 1e-6) <= 1e-4, (where, np.sort(diffs)[-10:])
        assert diffs.max() <= config.train.lr * done, (where, diffs.max())
  assert choices == ({True, False} if pool_size else set())


def _sweep_steps(kind: str, form: str, num_steps: int = 3):
  """A sweep of seeds 0 and 1 with lambda and lr swept (arrays in the step),
  both runs on this process's first device, `num_steps` steps of the step in
  config.train.sweep_step=form on fixed noise batches; (state, [metrics])."""
  from cyclegan_jax import sweeps  # pylint: disable=import-outside-toplevel
  config = (tiny_cut if kind == 'cut' else tiny).get_config()
  config.train.update(batch_size=1, num_steps=1000, sweep_step=form)
  if kind == 'cyclegan':
    config.train.pool_size = 1  # Full from step 2: the pools choose at random.
    config.sweep.train.lambda_cycle = (5.0,)
  else:
    config.sweep.train.lambda_nce = (5.0,)
  config.sweep.seed = (0, 1)
  config.sweep.train.lr = (2e-4,)
  mesh = jax.make_mesh((1, 1), ('runs', 'data'), devices=jax.devices()[:1])
  state = state_lib.create_sharded_state(
      [sweeps.run_config(config, run) for run in sweeps.runs(config)], (32, 32), mesh,
      steps_per_epoch=1000)
  step = train_step_lib.make_train_step(config, mesh, state, steps_per_epoch=1000)
  values = train_step_lib.sweep_values(config, mesh)
  sharding = jax.NamedSharding(mesh, jax.P('runs', 'data'))
  rng = np.random.default_rng(0)
  all_metrics = []
  for _ in range(num_steps):
    batch = {d: jax.device_put(rng.uniform(-1, 1, (2, 1, 32, 32, 3)).astype(np.float32),
                               sharding) for d in 'AB'}
    state, metrics = step(state, batch, values)
    all_metrics.append(jax.device_get(metrics))
  return jax.tree.map(np.asarray, state), all_metrics


@pytest.mark.parametrize('kind', ['cyclegan'])
def test_the_vmapped_sweep_step_agrees_with_the_loop_and_reruns_exactly(kind):
  """The accelerators' form of a sweep's step (config.train.sweep_step='vmap',
  forced here on CPU) against the CPU's form ('loop'), 2 runs on one device,
  3 steps with a pool that swaps: every loss within rtol 5e-4, each run's
  generator outputs for a fixed image within 1e-2 (1.3 grey levels), pool
  counts and keys equal; and a rerun of the vmapped form is bit-identical.
  The two forms are fused differently, so they round differently, and Adam
  turns rounding in a gradient near zero (a conv bias before an instance
  norm) into a step of the learning rate's size; how far that goes depends
  on the CPU XLA compiles for. Measured on two 2-core CPU machines: losses
  within 1.7e-5 and 1.7e-4 (relative), outputs within 2.0e-5 and 3.1e-3
  (CycleGAN; CUT, run by hand: 2.7e-7)."""
  vmapped, vmapped_metrics = _sweep_steps(kind, 'vmap')
  looped, looped_metrics = _sweep_steps(kind, 'loop')
  for got, expected in zip(vmapped_metrics, looped_metrics):
    assert got.keys() == expected.keys()
    for name in got:
      np.testing.assert_allclose(got[name], expected[name], rtol=5e-4, err_msg=name)
  image = np.random.default_rng(1).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
  net = models.create_generator((tiny if kind == 'cyclegan' else tiny_cut).get_config().model)
  for name in ('gen_ab', 'gen_ba') if kind == 'cyclegan' else ('gen',):
    for run in (0, 1):
      outputs = [net.apply({'params': jax.tree.map(lambda x, run=run: x[run],
                                                   getattr(s, name).params)}, image, train=False)
                 for s in (vmapped, looped)]
      difference = float(np.max(np.abs(outputs[0] - outputs[1])))
      assert difference <= 1e-2, (name, run, difference)
  np.testing.assert_array_equal(vmapped.rng, looped.rng)
  if kind == 'cyclegan':
    for pool in ('pool_fake_a', 'pool_fake_b'):
      np.testing.assert_array_equal(getattr(vmapped, pool).num_stored,
                                    getattr(looped, pool).num_stored)
  again, again_metrics = _sweep_steps(kind, 'vmap')
  assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(again),
                                                   jax.tree.leaves(vmapped)))
  assert jax.tree.map(np.array_equal, again_metrics, vmapped_metrics) == jax.tree.map(
      lambda _: True, vmapped_metrics)


def test_the_optimisers_hyperparameters_are_state_each_runs_own_under_a_wrapper(monkeypatch):
  """A sweep's learning rates live in each optimiser's state
  (optax.inject_hyperparams), so with an optimiser wrapped around it (here
  gradient clipping first, optax.chain) each run still updates with its
  own: learning rate 0 leaves the weights as they were, 2e-4 moves them."""
  import optax  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import sweeps  # pylint: disable=import-outside-toplevel
  config = tiny.get_config()
  config.train.update(batch_size=1, num_steps=1000)
  config.sweep.train.lr = (0.0, 2e-4)
  adam = state_lib.create_optimizer
  monkeypatch.setattr(state_lib, 'create_optimizer', lambda *args: optax.chain(
      optax.clip_by_global_norm(1.0), adam(*args)))
  mesh = jax.make_mesh((1, 1), ('runs', 'data'), devices=jax.devices()[:1])
  state = state_lib.create_sharded_state(
      [sweeps.run_config(config, run) for run in sweeps.runs(config)], (32, 32), mesh,
      steps_per_epoch=1000)
  np.testing.assert_array_equal(
      np.asarray(state.gen_ab.opt_state[1].hyperparams['learning_rate']),
      np.float32([0.0, 2e-4]))
  before = np.asarray(state.gen_ab.params['Conv_0']['kernel'])
  step = train_step_lib.make_train_step(config, mesh, state, steps_per_epoch=1000)
  sharding = jax.NamedSharding(mesh, jax.P('runs', 'data'))
  rng = np.random.default_rng(0)
  batch = {d: jax.device_put(rng.uniform(-1, 1, (2, 1, 32, 32, 3)).astype(np.float32), sharding)
           for d in 'AB'}
  state, _ = step(state, batch, train_step_lib.sweep_values(config, mesh))
  after = np.asarray(state.gen_ab.params['Conv_0']['kernel'])
  np.testing.assert_array_equal(after[0], before[0])
  assert np.abs(after[1] - before[1]).max() > 1e-5


def test_a_batch_of_eight_bit_pixels_steps_exactly_as_its_floats():
  """The input pipeline sends 8-bit images as uint8; the step maps them to
  the very floats the host would (image_io.to_unit), so training is the same
  bit for bit, a quarter of the bytes sent."""
  from cyclegan_jax import image_io  # pylint: disable=import-outside-toplevel
  from tests import one_step  # pylint: disable=import-outside-toplevel
  every_value = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
  np.testing.assert_array_equal(  # Bits, not values: -0.0 and 0.0 would pass as equal.
      np.asarray(jax.jit(train_step_lib.pixels_to_unit)(every_value)).view(np.uint32),
      image_io.to_unit(every_value, 0, 255).view(np.uint32))
  rng = np.random.default_rng(0)
  pixels = {d: rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8) for d in 'AB'}
  config = tiny.get_config()
  config.train.batch_size = 2
  _, from_pixels, metrics = one_step.first_step(config, pixels, (32, 32, 3))
  _, from_floats, expected = one_step.first_step(
      config, {d: image_io.to_unit(x, 0, 255) for d, x in pixels.items()}, (32, 32, 3))
  assert metrics == expected
  for got, want in zip(jax.tree.leaves(from_pixels), jax.tree.leaves(from_floats), strict=True):
    np.testing.assert_array_equal(got, want)
