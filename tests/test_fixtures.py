"""Workdirs written by earlier versions (tests/fixtures/) keep working: they
restore, continue training and translate as they did when written; a format
this code cannot read is refused in one line."""

import json
import os
import shutil

import jax
import numpy as np
from PIL import Image
import pytest

from cyclegan_jax import checkpoints
from cyclegan_jax import train
from cyclegan_jax import translate
from tests import synthetic
from tests.fixtures import make_fixtures

KINDS = ('cyclegan', 'pix2pix')
# Format 1: optax.adam's own optimiser state; 2: wrapped by
# optax.inject_hyperparams (read from 1 by checkpoints._from_format_1).
FORMATS = (1, 2)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp('fixture_data')
  return {'cyclegan': synthetic.make_unpaired_folder(str(root / 'unpaired'), n_train=4, n_test=2),
          'pix2pix': synthetic.make_aligned_folder(str(root / 'aligned'), n_train=4, n_test=2)}


def _copy(kind, tmp_path, fmt=1):
  """A writable copy of the fixture workdir (the fixture itself stays as it is)."""
  workdir = str(tmp_path / f'{kind}_format{fmt}')
  shutil.copytree(make_fixtures.fixture_dir(kind, fmt), workdir)
  return workdir


def _set_format(workdir, step, custom):
  path = os.path.join(checkpoints.step_dir(workdir, step), '_CHECKPOINT_METADATA')
  with open(path) as f:
    metadata = json.load(f)
  metadata['custom_metadata'] = custom
  with open(path, 'w') as f:
    json.dump(metadata, f)


@pytest.mark.slow
@pytest.mark.parametrize('fmt', FORMATS)
@pytest.mark.parametrize('kind', KINDS)
def test_a_fixture_workdir_resumes_and_continues(kind, fmt, data, tmp_path):
  workdir = _copy(kind, tmp_path, fmt)
  config = make_fixtures.fixture_config(kind)
  config.data.image_dir = data[kind]
  networks = ('gen_ab', 'gen_ba', 'disc_a', 'disc_b') if kind == 'cyclegan' else ('gen', 'disc')
  _, stored = checkpoints.load_params(workdir, networks)
  _, whole = checkpoints.load_state(workdir)
  state = train.train_and_evaluate(config, workdir)  # num_steps 2: restores, trains nothing.
  assert int(state.step) == 2
  for name in networks:
    for saved, restored in zip(jax.tree.leaves(stored[name]),
                               jax.tree.leaves(getattr(state, name).params)):
      np.testing.assert_array_equal(np.asarray(saved), np.asarray(restored))
    # Adam's moments and counts as saved; the hyperparameters the config's.
    opt_state = getattr(state, name).opt_state
    saved_adam = whole[name]['opt_state'] if fmt == 1 else whole[name]['opt_state']['inner_state']
    for saved, restored in zip(jax.tree.leaves(saved_adam), jax.tree.leaves(opt_state.inner_state)):
      np.testing.assert_array_equal(np.asarray(saved), np.asarray(restored))
    assert int(opt_state.count) == 2
  config.train.num_steps = 4
  state = train.train_and_evaluate(config, workdir)
  assert int(state.step) == 4
  assert os.listdir(checkpoints.checkpoint_dir(workdir)) == ['4']  # keep_checkpoints 1.


@pytest.mark.parametrize('fmt', FORMATS)
@pytest.mark.parametrize('kind', KINDS)
def test_a_fixture_workdir_translates_as_when_it_was_written(kind, fmt, tmp_path):
  workdir = _copy(kind, tmp_path, fmt)
  inputs = tmp_path / 'inputs'
  inputs.mkdir()
  shutil.copy(make_fixtures.INPUT, inputs)
  [written] = translate.translate_folder(workdir, str(inputs), str(tmp_path / 'out'))
  now = np.asarray(Image.open(written), np.int16)
  then = np.asarray(Image.open(os.path.join(workdir, 'translated.png')), np.int16)
  # Float rounding may move a value across an 8-bit step, nothing more.
  assert now.shape == then.shape and np.abs(now - then).max() <= 1


def test_checkpoints_without_a_recorded_format_read_as_format_1(tmp_path):
  workdir = _copy('cyclegan', tmp_path)
  _set_format(workdir, 2, {})  # As written before formats were recorded.
  step, params = checkpoints.load_params(workdir, ('gen_ab',))
  assert step == 2 and params['gen_ab']


def test_a_checkpoint_of_an_unknown_format_is_refused_in_one_line(data, tmp_path):
  workdir = _copy('cyclegan', tmp_path)
  _set_format(workdir, 2, {'format': 99, 'written_by': 'cyclegan_jax 9.0'})
  message = (f'{workdir}/checkpoints/2: checkpoint format 99 (written by cyclegan_jax 9.0), '
             f'but cyclegan_jax {checkpoints._version()} reads formats 1, 2; '
             'upgrade cyclegan_jax to read it, or use another --workdir')
  with pytest.raises(checkpoints.CheckpointError) as error:
    checkpoints.load_params(workdir, ('gen_ab',))
  assert str(error.value) == message
  config = make_fixtures.fixture_config('cyclegan')
  config.data.image_dir = data['cyclegan']
  config.train.num_steps = 4
  with pytest.raises(checkpoints.CheckpointError) as error:
    train.train_and_evaluate(config, workdir)
  assert str(error.value) == message
  assert os.listdir(checkpoints.checkpoint_dir(workdir)) == ['2']  # Nothing moved or added.


def test_a_state_of_another_layout_is_refused_in_one_line(data, tmp_path):
  """E.g. a workdir trained on 4 devices resumed on 1: the per-device pools
  differ in shape. One line, not an error from inside Orbax."""
  workdir = _copy('cyclegan', tmp_path)
  config = make_fixtures.fixture_config('cyclegan')
  config.data.image_dir = data['cyclegan']
  config.data.crop_size = 28  # Unchecked by config.json here: its record is removed below.
  config.data.load_size = 32
  os.remove(os.path.join(workdir, checkpoints.CONFIG_FILE))
  with pytest.raises(checkpoints.CheckpointError) as error:
    train.train_and_evaluate(config, workdir)
  assert str(error.value).startswith(
      f'{workdir}/checkpoints/2: holds a state of another layout (pool_fake_a/images: '
      '(1, 2, 32, 32, 3) there, (1, 2, 28, 28, 3) now;')
  assert '\n' not in str(error.value)


def test_a_network_the_checkpoint_lacks_is_one_line(tmp_path):
  workdir = _copy('cyclegan', tmp_path)
  with pytest.raises(checkpoints.CheckpointError, match=(
      rf'^{workdir}/checkpoints/2: has no network gen \(it has disc_a, disc_b, gen_ab, gen_ba, '
      r'pool_fake_a, pool_fake_b, rng, step\); expected a checkpoint of this model kind$')):
    checkpoints.load_params(workdir, ('gen',))


def test_a_state_read_as_stored_is_saved_in_its_own_format(data, tmp_path):
  """What --mode=extract does (load_state, then save): a format-1 checkpoint
  is written back as format 1, so that it still resumes."""
  source = _copy('cyclegan', tmp_path)
  step, state = checkpoints.load_state(source)
  assert checkpoints.stored_format(source, step) == 1
  workdir = str(tmp_path / 'copy')
  checkpoints.prepare_workdir(workdir)
  manager = checkpoints.create_manager(workdir, 1)
  checkpoints.save(manager, state, step, checkpoints.stored_format(source, step))
  checkpoints.wait_until_finished(manager)
  assert checkpoints.stored_format(workdir, step) == 1
  config = make_fixtures.fixture_config('cyclegan')
  config.data.image_dir = data['cyclegan']
  state = train.train_and_evaluate(config, workdir)  # num_steps 2: restores, trains nothing.
  assert int(state.step) == 2 and int(state.gen_ab.opt_state.count) == 2
