"""Hostile configs, command lines and faults during training: each ends in a
clear one-line message and a workdir that resumes."""

import glob
import importlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import tiny
from cyclegan_jax import checkpoints
from cyclegan_jax import config_checks
from cyclegan_jax import configuration
from cyclegan_jax import train
from cyclegan_jax import workdir_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(image_folder, **overrides):
  config = tiny.get_config()
  config.data.image_dir = image_folder
  for field, value in overrides.items():
    node = config
    *groups, name = field.split('.')
    for group in groups:
      node = node[group]
    node[name] = value
  return config


@pytest.mark.parametrize('field,value,message', [
    ('data.crop_size', 300, "config.data.crop_size=300: expected <= config.data.load_size=36"),
    ('data.crop_size', 30, 'config.data.crop_size=30: expected a multiple of 4'),
    ('data.preprocess', 'resize', "config.data.preprocess='resize': expected one of"),
    ('model.generator', 'resnet9', "config.model.generator='resnet9': expected one of"),
    ('model.discriminator', 'patch', "config.model.discriminator='patch': expected one of"),
    ('model.dtype', 'float16', "config.model.dtype='float16': expected one of"),
    ('model.ngf', 0, 'config.model.ngf=0: expected an integer >= 1'),
    ('model.input_nc', 0, 'config.model.input_nc=0: expected an integer >= 1'),
    ('model.output_nc', 1, 'config.train.lambda_identity=0.5: expected 0 when '
                           'config.model.input_nc=3 and output_nc=1 differ'),
    ('data.value_range', (5, 1), 'config.data.value_range=(5, 1): expected () for the full '
                                 "range of each file's pixel type, or (low, high) with low < high"),
    ('data.value_range', (0, 1, 2), 'config.data.value_range=(0, 1, 2): expected ()'),
    ('model.kind', 'pix2pixhd', "config.model.kind='pix2pixhd': expected one of cyclegan, pix2pix"),
    ('model.norm', 'group', "config.model.norm='group': expected one of instance, batch"),
    ('model.generator', 'unet_100', "config.model.generator='unet_100': expected one of"),
    ('train.lambda_l1', -1.0, 'config.train.lambda_l1=-1.0: expected a number >= 0'),
    ('eval.every_steps', 5, "config.eval.inception_weights='': expected a weights file when "
                            'config.eval.every_steps > 0'),
    ('eval.kid_subset_size', 1, 'config.eval.kid_subset_size=1: expected an integer >= 2'),
    ('eval.fid_mode', 'cleanfid', "config.eval.fid_mode='cleanfid': expected one of legacy, clean"),
    ('train.gan_mode', 'lsgan2', "config.train.gan_mode='lsgan2': expected one of"),
    ('train.lambda_cycle', -1.0, 'config.train.lambda_cycle=-1.0: expected a number >= 0'),
    ('train.lambda_identity', -0.5, 'config.train.lambda_identity=-0.5: expected a number >= 0'),
    ('train.lr', 0.0, 'config.train.lr=0.0: expected a number > 0'),
    ('train.beta1', 1.0, 'config.train.beta1=1.0: expected a number in [0, 1)'),
    ('train.batch_size', 0, 'config.train.batch_size=0: expected an integer >= 1'),
    ('train.batch_size', 6, 'config.train.batch_size=6 is not divisible by the 4 devices'),
    ('train.pool_size', -1, 'config.train.pool_size=-1: expected an integer >= 0'),
    ('train.sweep_step', 'pmap', "config.train.sweep_step='pmap': expected one of auto, vmap, "
                                 'loop'),
    ('checkpoint_every_steps', 0, 'config.checkpoint_every_steps=0: expected an integer >= 1'),
    ('num_samples', 0, 'config.num_samples=0: expected an integer >= 1'),
])
def test_impossible_config_values_name_the_field(field, value, message):
  config = _tiny('/nowhere', **{field: value})
  with pytest.raises(ValueError) as error:
    config_checks.validate(config, num_devices=4 if field == 'train.batch_size' else 1)
  assert message in str(error.value) and '\n' not in str(error.value)


def test_every_shipped_config_is_valid():
  config_checks.validate(tiny.get_config(), num_devices=1)
  from configs import default, quickstart  # pylint: disable=import-outside-toplevel
  config_checks.validate(default.get_config(), num_devices=1)
  config_checks.validate(quickstart.get_config(), num_devices=1)
  for path in sorted(glob.glob(os.path.join(REPO, 'configs', '*.py'))):
    name = os.path.splitext(os.path.basename(path))[0]
    if name != '__init__':
      config = importlib.import_module(f'configs.{name}').get_config()
      config.data.image_dir = config.data.image_dir or '/data'  # pix2pix's base configs.
      config_checks.validate(config, 1)


def test_resume_refuses_another_kind_norm_or_direction_and_reads_old_workdirs():
  from configs import tiny_pix2pix  # pylint: disable=import-outside-toplevel
  stored = tiny_pix2pix.get_config()
  config = tiny_pix2pix.get_config()
  config.data.direction = 'BtoA'
  with pytest.raises(ValueError, match=r"data.direction: 'AtoB' there, 'BtoA' now"):
    config_checks.check_resumable(stored, config, 'W')
  old = tiny.get_config().to_dict()  # A CycleGAN workdir from before these fields existed.
  for group, field in (('model', 'kind'), ('model', 'norm'), ('data', 'direction')):
    del old[group][field]
  old = configuration.upgrade(old)  # As configuration.load reads its config.json.
  config_checks.check_resumable(old, tiny.get_config(), 'W')
  with pytest.raises(ValueError, match=r"model.kind: 'cyclegan' there, 'pix2pix' now"):
    config_checks.check_resumable(old, stored, 'W')


def test_pix2pix_config_mistakes_name_the_field():
  from configs import tiny_pix2pix  # pylint: disable=import-outside-toplevel
  config = tiny_pix2pix.get_config()
  with pytest.raises(ValueError, match=r"^config.data.image_dir='': expected a folder of "
                                       r"paired images"):
    config_checks.validate(config, 1)
  config.data.image_dir = '/data'
  config.data.direction = 'AtoC'
  with pytest.raises(ValueError, match=r"^config.data.direction='AtoC': expected one of "
                                       r"AtoB, BtoA$"):
    config_checks.validate(config, 1)


def _main(*args, timeout=300, **kwargs):
  return subprocess.run([sys.executable, 'main.py', *args], cwd=REPO, capture_output=True,
                        text=True, timeout=timeout, **kwargs)


def _one_line_error(result, status):
  assert result.returncode == status, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: '), result.stderr[-3000:]
  return last


@pytest.mark.slow
@pytest.mark.parametrize('args,message', [
    (['--config=configs/tiny.py', '--config.train.lambda_cycl=5'],
     "error: --config.train.lambda_cycl: config.train has no field 'lambda_cycl' (its fields: "),
    (['--config=configs/tiny.py', '--config.train.lr=fast'],
     "error: flag --config.train.lr=fast: could not convert string to float: 'fast'"),
    (['--config=configs/tiny2.py'],
     'error: --config=configs/tiny2.py: cannot load this config file ([Errno 2] No such file'),
    (['--config=configs/tiny.py', '--config.data.crop_size=40'],
     'error: config.data.crop_size=40: expected <= config.data.load_size=36'),
])
def test_command_line_mistakes_are_one_line(args, message, tmp_path):
  workdir = tmp_path / 'w'
  result = _main(*args, f'--workdir={workdir}')
  assert message in _one_line_error(result, 2 if 'crop_size' not in message else 1)
  assert not workdir.exists() or not os.listdir(workdir)


@pytest.mark.slow
def test_resuming_with_another_model_shape_is_refused(image_folder, tmp_path):
  workdir = str(tmp_path)
  train.train_and_evaluate(_tiny(image_folder, **{'train.num_steps': 1}), workdir)
  stored = (tmp_path / 'config.json').read_text()
  other = _tiny(image_folder, **{'train.num_steps': 2, 'model.ngf': 16, 'train.pool_size': 7})
  with pytest.raises(ValueError) as error:
    train.train_and_evaluate(other, workdir)
  assert str(error.value) == (
      f'{workdir} holds checkpoints of another model shape (model.ngf: 8 there, 16 now; '
      'train.pool_size: 50 there, 7 now); use another --workdir, or the same values to resume')
  assert (tmp_path / 'config.json').read_text() == stored
  assert os.listdir(tmp_path / 'checkpoints') == ['1']
  # Other fields (here the length of the run) may change on resume.
  state = train.train_and_evaluate(_tiny(image_folder, **{'train.num_steps': 2}), workdir)
  assert int(state.step) == 2


@pytest.mark.slow
def test_a_nan_stops_training_and_no_nan_state_is_saved(image_folder, tmp_path):
  # A learning rate of 1e30 moves every weight by ~1e30 in step 1, which
  # overflows the losses of step 2.
  config = _tiny(image_folder, **{'train.lr': 1e30, 'train.num_steps': 8,
                                  'checkpoint_every_steps': 1})
  with pytest.raises(train.NonFiniteLossError) as error:
    train.train_and_evaluate(config, str(tmp_path))
  assert str(error.value).startswith('step 2: loss ')
  assert 'stopped without saving this state. The newest checkpoint is step 1' in str(error.value)
  assert os.listdir(tmp_path / 'checkpoints') == ['1']
  manager = ocp.CheckpointManager(checkpoints.checkpoint_dir(str(tmp_path)))
  saved = manager.restore(1, args=ocp.args.StandardRestore())
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(saved))


def test_unwritable_workdir_is_a_clear_error_before_compiling(image_folder, tmp_path):
  (tmp_path / 'file').write_text('not a folder')
  workdir = tmp_path / 'file' / 'run'
  with pytest.raises(OSError, match=f'{workdir}: cannot write to this workdir'):
    train.train_and_evaluate(_tiny(image_folder), str(workdir))


@pytest.mark.slow
def test_full_disk_is_a_clear_error_and_leaves_no_checkpoint(image_folder, tmp_path):
  workdir = tmp_path / 'w'
  args = ['main.py', '--config=configs/tiny.py', f'--workdir={workdir}',
          f'--config.data.image_dir={image_folder}']
  # Files over 400 kB fail with EFBIG, as on a full disk: config.json and the
  # event file fit, a checkpoint's arrays (about 2 MB) do not.
  result = subprocess.run(['bash', '-c', 'ulimit -f 400 && exec "$0" "$@"', sys.executable,
                           *args], cwd=REPO, capture_output=True, text=True, timeout=300)
  # Orbax logs the failure of its background writer with a traceback, and
  # TensorStore's threads may print "Event loop is closed" tracebacks for
  # writes still in flight, at the same time as the command's own one-line
  # message (seen once in CI: a traceback began in the middle of our line).
  assert result.returncode == 1, result.stderr[-3000:]
  assert (f'error: {workdir}/checkpoints: could not write a checkpoint (File too large); '
          'the newest complete checkpoint is none yet. Free some space (or fix the '
          'permissions) and run the same command again to resume from there'
          ) in result.stderr, result.stderr[-3000:]
  manager = ocp.CheckpointManager(checkpoints.checkpoint_dir(str(workdir)))
  assert manager.latest_step() is None  # Nothing half-written passes for a checkpoint.
  # With space again, the same command trains from the start to the end.
  result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert ocp.CheckpointManager(checkpoints.checkpoint_dir(str(workdir))).latest_step() == 4
  assert json.loads((workdir / 'config.json').read_text())['train']['num_steps'] == 4


def _damage(workdir, step):
  """Truncates the data files of a checkpoint to half, as a partial copy or a
  disk error would; returns {path: bytes} of its files after the damage."""
  damaged = {}
  for path in sorted(glob.glob(f'{checkpoints.step_dir(str(workdir), step)}/**', recursive=True)):
    if os.path.isfile(path):
      if f'{os.sep}d{os.sep}' in path:
        os.truncate(path, os.path.getsize(path) // 2)
      damaged[os.path.relpath(path, checkpoints.step_dir(str(workdir), step))] = (
          open(path, 'rb').read())
  return damaged


def _files(folder):
  return {os.path.relpath(p, folder): open(p, 'rb').read()
          for p in glob.glob(f'{folder}/**', recursive=True) if os.path.isfile(p)}


@pytest.fixture(scope='module')
def two_checkpoints(image_folder, tmp_path_factory):
  """A tiny run with checkpoints at steps 2 and 4 (keep_checkpoints 2)."""
  workdir = tmp_path_factory.mktemp('two_checkpoints')
  train.train_and_evaluate(_tiny(image_folder, keep_checkpoints=2), str(workdir))
  return workdir


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_is_named_set_aside_and_training_resumes_before_it(
    image_folder, two_checkpoints, tmp_path, capsys):
  workdir = tmp_path / 'w'
  shutil.copytree(two_checkpoints, workdir)
  damaged = _damage(workdir, 4)
  state = train.train_and_evaluate(_tiny(image_folder, keep_checkpoints=2,
                                         **{'train.num_steps': 6}), str(workdir))
  assert int(state.step) == 6
  err = capsys.readouterr().err
  assert re.search(rf'^warning: {workdir}/checkpoints/4: cannot be read \(ValueError: '
                   r'OUT_OF_RANGE: .*\); resuming from step 2$', err, re.M), err
  assert f'warning: {workdir}/checkpoints/4: moved to {workdir}/checkpoints_damaged/4, ' \
         'untouched' in err
  # Moved aside byte for byte; pruning (keep 2) left the intact 4 and 6 written since.
  assert _files(workdir / 'checkpoints_damaged' / '4') == damaged
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['4', '6']


@pytest.mark.slow
def test_read_only_modes_skip_a_damaged_checkpoint_and_leave_it_in_place(
    two_checkpoints, tmp_path):
  workdir = tmp_path / 'w'
  shutil.copytree(two_checkpoints, workdir)
  damaged = _damage(workdir, 4)
  inputs = tmp_path / 'in'
  inputs.mkdir()
  shutil.copy(glob.glob(f'{two_checkpoints}/samples/*.png')[0], inputs / 'x.png')
  result = _main('--mode=translate', f'--workdir={workdir}', f'--input={inputs}',
                 f'--output={tmp_path / "out"}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]  # Nor from Orbax's threads.
  assert re.search(rf'^warning: {workdir}/checkpoints/4: cannot be read \(.*\); using step 2$',
                   result.stderr, re.M), result.stderr[-3000:]
  assert os.listdir(tmp_path / 'out') == ['x.png']
  assert _files(workdir / 'checkpoints' / '4') == damaged  # Read-only: left where it was.
  # Asking for the damaged step by name is one line.
  with pytest.raises(checkpoints.CheckpointError, match=(
      rf'^{workdir}/checkpoints/4: cannot be read \(ValueError: OUT_OF_RANGE: .*\); choose '
      r'another --step$')):
    checkpoints.load_params(str(workdir), ('gen_ab',), step=4)


def test_no_intact_checkpoint_is_one_line_listing_what_was_found(
    image_folder, two_checkpoints, tmp_path):
  workdir = tmp_path / 'w'
  shutil.copytree(two_checkpoints, workdir)
  before = [_damage(workdir, step) for step in (2, 4)]
  with pytest.raises(checkpoints.CheckpointError) as error:
    train.train_and_evaluate(_tiny(image_folder, **{'train.num_steps': 6}), str(workdir))
  assert re.fullmatch(rf'{workdir}/checkpoints: no checkpoint can be read \(step 4: .*; '
                      r'step 2: .*\); move the folder aside to start again, or use another '
                      r'--workdir', str(error.value)), str(error.value)
  assert '\n' not in str(error.value)
  assert [_files(workdir / 'checkpoints' / s) for s in ('2', '4')] == before  # Nothing moved.
  assert not (workdir / 'checkpoints_damaged').exists()


def test_an_intact_checkpoint_that_fails_to_restore_is_named_and_never_moved(
    image_folder, two_checkpoints, tmp_path, monkeypatch):
  """Damage is files that cannot be read in full. A checkpoint whose files
  all read but whose restore fails (here Orbax's refusal of another
  topology, as before checkpoints were resharded) is not damage: it stops
  training and reading in one line, and nothing falls back or moves."""
  workdir = tmp_path / 'w'
  shutil.copytree(two_checkpoints, workdir)
  before = _files(workdir / 'checkpoints')

  def fail(self, step, args=None):
    raise ValueError('Topology mismatch detected. The checkpoint was saved with a different '
                     'topology than the current one.\nmore')
  monkeypatch.setattr(ocp.CheckpointManager, 'restore', fail)
  expected = (rf'^{workdir}/checkpoints/4: its files read in full, but restoring it failed '
              r'\(ValueError: Topology mismatch detected\. .*\); it is left as it is: read it '
              r'with the version that wrote it, or use another --workdir$')
  with pytest.raises(checkpoints.CheckpointError, match=expected):
    train.train_and_evaluate(_tiny(image_folder, **{'train.num_steps': 6}), str(workdir))
  with pytest.raises(checkpoints.CheckpointError, match=expected):
    checkpoints.load_params(str(workdir), ('gen_ab',))
  assert _files(workdir / 'checkpoints') == before
  assert not (workdir / 'checkpoints_damaged').exists()


@pytest.mark.slow
def test_a_second_trainer_on_a_live_workdir_is_refused_and_a_killed_one_blocks_nothing(
    image_folder, tmp_path):
  workdir = tmp_path / 'w'
  first = subprocess.Popen(
      [sys.executable, 'main.py', '--config=configs/tiny.py', f'--workdir={workdir}',
       f'--config.data.image_dir={image_folder}', '--config.train.num_steps=100000'],
      cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    lock = workdir / 'trainer.lock'
    deadline = time.time() + 120
    while not (lock.exists() and lock.read_text().startswith(f'pid {first.pid} ')
               and (workdir / 'config.json').exists()):
      assert time.time() < deadline and first.poll() is None, 'the first trainer did not start'
      time.sleep(0.2)
    config_before = (workdir / 'config.json').read_bytes()
    with pytest.raises(workdir_lock.WorkdirBusyError) as error:
      train.train_and_evaluate(_tiny(image_folder, **{'train.num_steps': 4}), str(workdir))
    assert str(error.value) == (
        f'{workdir}: another trainer is using this workdir (pid {first.pid} on host '
        f'{socket.gethostname()}); wait for it to end (or stop it), or use another --workdir')
    assert (workdir / 'config.json').read_bytes() == config_before
    # The same from the command line: one line, status 1.
    result = _main('--config=configs/tiny.py', f'--workdir={workdir}',
                   f'--config.data.image_dir={image_folder}')
    assert _one_line_error(result, 1) == f'error: {error.value}'
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait()
  # The lock died with its process: the next run starts (and resumes) at once.
  state = train.train_and_evaluate(_tiny(image_folder, **{'train.num_steps': 2}), str(workdir))
  assert int(state.step) >= 2
