"""End-to-end training runs on tiny configs."""

import glob
import importlib.metadata
import json
import os
import platform
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from configs import tiny
from cyclegan_jax import checkpoints
from cyclegan_jax import train
from cyclegan_jax import translate
from tests import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _leaves_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_one_step_under_tfds_mock_data(tmp_path):
  config = tiny.get_config()
  config.train.num_steps = 1
  with tfds.testing.mock_data(num_examples=4):
    state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 1
  assert os.listdir(tmp_path / 'checkpoints') == ['1']
  assert os.path.isfile(tmp_path / 'samples' / 'step_00000001.png')
  assert glob.glob(str(tmp_path / 'events.out.tfevents.*'))
  assert json.loads((tmp_path / 'config.json').read_text())['data']['tfds_name'] == \
      'cycle_gan/horse2zebra'


@pytest.fixture(scope='module')
def trained_workdir(image_folder, tmp_path_factory):
  """A folder run of 4 steps, checkpointing every 2."""
  workdir = str(tmp_path_factory.mktemp('run'))
  config = tiny.get_config()
  config.data.image_dir = image_folder
  state = train.train_and_evaluate(config, workdir)
  assert int(state.step) == 4
  return workdir, config


def test_folder_run_checkpoints_samples_and_logs(trained_workdir):
  workdir, config = trained_workdir
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4']
  grid = np.asarray(Image.open(os.path.join(workdir, 'samples', 'step_00000004.png')))
  # num_samples rows per domain; real | translated | reconstructed.
  assert grid.shape == (2 * config.num_samples * 32, 3 * 32, 3)
  assert np.std(grid[:, 32:64].astype(float)) > 0


def test_a_run_records_the_software_it_trains_with(trained_workdir):
  """workdir/versions.json (the report shows it): Python, the libraries, the
  project and, from a git checkout, its commit."""
  workdir, _ = trained_workdir
  record, = json.loads(open(os.path.join(workdir, 'versions.json')).read())
  assert record['from_step'] == 0 and record['python'] == platform.python_version()
  for package in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'cyclegan_jax'):
    assert record[package] == importlib.metadata.version(package)
  head = subprocess.run(['git', '-C', REPO, 'rev-parse', 'HEAD'], capture_output=True,
                        text=True, check=False)
  if head.returncode == 0:  # Imported from this checkout (pytest's pythonpath).
    assert record['git_commit'].removesuffix('-dirty') == head.stdout.strip()
  else:
    assert record['git_commit'] is None


@pytest.mark.slow
def test_rerun_resumes_from_the_latest_checkpoint_and_continues(trained_workdir):
  workdir, config = trained_workdir
  _, saved = checkpoints.load_params(workdir, ('gen_ab', 'disc_b'))
  # The same command again: nothing left to do, the state is the checkpoint's.
  state = train.train_and_evaluate(config, workdir)
  assert int(state.step) == 4
  assert _leaves_equal(state.gen_ab.params, saved['gen_ab'])
  assert _leaves_equal(state.disc_b.params, saved['disc_b'])
  # A longer run continues counting from 4.
  config = config.copy_and_resolve_references()
  config.train.num_steps = 6
  state = train.train_and_evaluate(config, workdir)
  assert int(state.step) == 6
  # Resumed twice with the same software: still the one record of step 0.
  versions = json.loads(open(os.path.join(workdir, 'versions.json')).read())
  assert [r['from_step'] for r in versions] == [0]
  assert sorted(map(int, os.listdir(os.path.join(workdir, 'checkpoints')))) == [2, 4, 6]
  assert not _leaves_equal(state.gen_ab.params, saved['gen_ab'])


def test_translate_any_size_keeps_names_and_inputs(trained_workdir, tmp_path):
  workdir, _ = trained_workdir
  inputs = tmp_path / 'in'
  inputs.mkdir()
  rng = np.random.default_rng(0)
  originals = {'wide.jpg': rng.integers(0, 256, (37, 50, 3), dtype=np.uint8),
               'gray.png': rng.integers(0, 256, (21, 19), dtype=np.uint8),
               'big.bmp': rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)}
  for name, pixels in originals.items():
    Image.fromarray(pixels).save(inputs / name)
  before = {name: (inputs / name).read_bytes() for name in originals}
  for direction in ('AtoB', 'BtoA'):
    out = tmp_path / direction
    written = translate.translate_folder(workdir, str(inputs), str(out), direction)
    assert sorted(os.path.basename(p) for p in written) == ['big.png', 'gray.png', 'wide.png']
    for name, pixels in originals.items():
      result = np.asarray(Image.open(out / (os.path.splitext(name)[0] + '.png')))
      assert result.shape == (*pixels.shape[:2], 3)
  assert {name: (inputs / name).read_bytes() for name in originals} == before
  with pytest.raises(ValueError, match='direction'):
    translate.translate_folder(workdir, str(inputs), str(tmp_path / 'x'), 'AtoC')


def _run(args, env=None, timeout=300):
  result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return result


@pytest.mark.slow
def test_command_line_train_then_translate(image_folder, tmp_path):
  workdir = tmp_path / 'w'
  result = _run(['main.py', '--config=configs/tiny.py', f'--workdir={workdir}',
                 f'--config.data.image_dir={image_folder}', '--config.train.num_steps=2'])
  assert 'gen_ab: 50,947 parameters' in result.stdout
  assert 'disc_b: 44,537 parameters' in result.stdout
  _run(['main.py', '--mode=translate', f'--workdir={workdir}',
        f'--input={image_folder}/testB', f'--output={tmp_path}/out', '--direction=BtoA'])
  assert sorted(os.listdir(tmp_path / 'out')) == sorted(os.listdir(f'{image_folder}/testB'))


FOUR_DEVICES = '''
import sys
import jax, numpy as np
from configs import tiny
from cyclegan_jax import train
assert jax.device_count() == 4, jax.devices()
config = tiny.get_config()
config.data.image_dir = sys.argv[1]
config.train.batch_size = 4
config.train.num_steps = 2
state = train.train_and_evaluate(config, sys.argv[2])
assert int(state.step) == 2
# One pool per device, each holding its own 2 steps x 1 image.
assert state.pool_fake_a.images.shape[0] == 4
np.testing.assert_array_equal(np.asarray(state.pool_fake_b.num_stored), [2, 2, 2, 2])
assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(state.gen_ab.params)))
config.train.batch_size = 6
try:
  train.train_and_evaluate(config, sys.argv[2] + '_bad')
  raise AssertionError('a batch of 6 over 4 devices should be refused')
except ValueError as e:
  assert 'config.train.batch_size=6 is not divisible by the 4 devices' in str(e), e
print('OK four devices')
'''


@pytest.mark.slow
def test_train_on_four_devices(image_folder, tmp_path):
  result = _run(['-c', FOUR_DEVICES, image_folder, str(tmp_path)],
                env=xla_flags.with_cpu_devices(4))
  assert 'OK four devices' in result.stdout


def test_profile_steps_write_a_trace(image_folder, tmp_path):
  config = tiny.get_config()
  config.data.image_dir = image_folder
  config.train.num_steps = 14
  config.profile_steps = 2  # Steps 11 and 12.
  config.sample_every_steps = config.checkpoint_every_steps = 100
  train.train_and_evaluate(config, str(tmp_path))
  traces = glob.glob(str(tmp_path / 'plugins' / 'profile' / '*' / '*.xplane.pb'))
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0


def test_record_best_keeps_the_lowest_fid_per_direction_across_runs(tmp_path):
  workdir = str(tmp_path)
  train.record_best(workdir, 10, {'AtoB': {'fid': 50.0}, 'BtoA': {'fid': 70.0}})
  best = train.record_best(workdir, 20, {'AtoB': {'fid': 40.0}, 'BtoA': {'fid': 80.0},
                                         'protocol': {'fid_mode': 'legacy'}})
  assert best == {'AtoB': {'step': 20, 'fid': 40.0}, 'BtoA': {'step': 10, 'fid': 70.0}}
  # A resumed run reads the file back: only a lower FID replaces an entry.
  train.record_best(workdir, 30, {'AtoB': {'fid': 45.0}, 'BtoA': {'fid': 60.0}})
  assert json.loads((tmp_path / 'eval' / 'best.json').read_text()) == {
      'AtoB': {'step': 20, 'fid': 40.0}, 'BtoA': {'step': 30, 'fid': 60.0}}


@pytest.mark.slow
def test_fid_during_training(image_folder, tmp_path):
  """eval.every_steps: FID/KID at the end of training (random Inception
  weights), in eval/, best.json, TensorBoard and the printed log."""
  from cyclegan_jax import inception  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import inception_weights  # pylint: disable=import-outside-toplevel
  weights = str(tmp_path / 'inception.npz')
  inception_weights.save(weights, inception.init_variables(0))
  workdir = tmp_path / 'w'
  result = _run(['main.py', '--config=configs/tiny.py', f'--workdir={workdir}',
                 f'--config.data.image_dir={image_folder}', '--config.train.num_steps=2',
                 '--config.eval.every_steps=2', f'--config.eval.inception_weights={weights}',
                 '--config.eval.num_images=3', '--config.eval.kid_subset_size=2',
                 '--config.eval.kid_subsets=5', '--config.eval.fid_mode=clean'],
                env={'OPENBLAS_NUM_THREADS': '1'})
  stored = json.loads((workdir / 'eval' / 'step_00000002.json').read_text())
  assert set(stored) == {'step', 'AtoB', 'BtoA', 'protocol'} and stored['AtoB']['num_fake'] == 3
  assert stored['protocol']['fid_mode'] == 'clean'
  assert 'step 2 AtoB: FID (clean) ' in result.stdout
  # The plot of FID, KID and the losses over steps, drawn at each evaluation.
  plot = Image.open(workdir / 'eval' / 'curves.png')
  assert plot.size == (800, 900) and np.asarray(plot.convert('L')).std() > 10
  best = json.loads((workdir / 'eval' / 'best.json').read_text())
  assert best['AtoB'] == {'step': 2, 'fid': stored['AtoB']['fid']}
  assert f'best FID so far: AtoB {stored["AtoB"]["fid"]:.4f} at step 2' in result.stdout
  assert 'eval/AtoB/fid' in (workdir / 'train.log').read_text()  # The clu log of the scalars.


def test_metrics_are_fetched_only_to_log_or_before_a_checkpoint(image_folder, tmp_path,
                                                                monkeypatch):
  """Nothing waits for a step before the next is queued: the metrics stay on
  the device (summed there) until a log step, or a checkpoint between logs."""
  config = tiny.get_config()
  config.data.image_dir = image_folder
  config.train.num_steps = 6
  config.log_every_steps = 3
  config.checkpoint_every_steps = 2  # Steps 2 and 4 fall between logs; 6 on one.
  config.sample_every_steps = 100
  fetched, on_host = [], train.Runs.on_host
  steps = []

  def counting(self, metrics):
    fetched.append(metrics)
    return on_host(self, metrics)

  add_metrics = train.add_metrics

  def adding(total, metrics):
    steps.append(metrics)
    return add_metrics(total, metrics)

  monkeypatch.setattr(train.Runs, 'on_host', counting)
  monkeypatch.setattr(train, 'add_metrics', adding)
  train.train_and_evaluate(config, str(tmp_path))
  # Logs at 3 and 6; checkpoints at 2 and 4 check the steps since the last
  # log (at 6 the log has just checked them).
  assert len(fetched) == 4
  # add_metrics saw steps 2, 3 (summed onto step 1), 5, 6 (onto step 4).
  assert len(steps) == 4


def test_prefetched_batches_go_ahead_and_errors_wait_their_turn():
  sent = []

  def to_device(item):
    sent.append(item)
    if item == 3:
      raise ValueError('step 3: a bad batch')
    return item * 10

  batches = train.prefetched(iter(range(5)), to_device, ahead=2)
  assert next(batches) == 0 and sent == [0, 1, 2]  # Two batches ahead of step 0's.
  assert next(batches) == 10 and next(batches) == 20
  with pytest.raises(ValueError, match='step 3: a bad batch'):
    next(batches)
