"""A workdir moves between device and process counts, for every family: a
model trained on 4 devices translates on 1 as it did on 4; training resumes
4 -> 1, 1 -> 4 and 4 -> 2 devices (the last as 2 processes of one device);
a checkpoint written by 2 processes is evaluated by 1."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import tiny
from configs import tiny_cut
from configs import tiny_pix2pix
from cyclegan_jax import checkpoints
from cyclegan_jax import evaluate
from cyclegan_jax import inception
from cyclegan_jax import inception_weights
from cyclegan_jax import train
from cyclegan_jax import translate
from tests import synthetic
from tests import xla_flags

# End-to-end: runs on several simulated devices and processes, resumed.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ('cyclegan', 'pix2pix', 'cut')


def config_for(kind: str, data: str, steps: int, weights: str = ''):
  """The tiny config of `kind`, batch 4 (it divides 4, 2 and 1 devices), a
  checkpoint every 2 steps; CycleGAN keeps its history pools (50 images per
  device) so that a resume re-lays them."""
  config = {'cyclegan': tiny, 'pix2pix': tiny_pix2pix, 'cut': tiny_cut}[kind].get_config()
  config.data.image_dir = data
  config.data.num_workers = 1
  config.train.batch_size = 4
  config.train.num_steps = steps
  config.keep_checkpoints = 10
  config.eval.inception_weights = weights
  config.eval.num_images = 3
  config.eval.batch_size = 3
  config.eval.kid_subsets = 2
  config.eval.kid_subset_size = 2
  return config


# Trains in a fresh process (its device count from XLA_FLAGS; two processes
# when a port is given), then translates `inputs` into `outputs` unless '-'.
TRAIN = '''
import sys
import jax
from cyclegan_jax import distributed, train, translate
from tests.test_topology import config_for
kind, data, workdir, steps, port, process_id, inputs, outputs = sys.argv[1:]
if port != '-':
  distributed.initialize(f'127.0.0.1:{port}', 2, int(process_id))
state = train.train_and_evaluate(config_for(kind, data, int(steps)), workdir)
print('trained', jax.process_count(), jax.device_count(), int(state.step))
if outputs != '-':
  translate.translate_folder(workdir, inputs, outputs)
'''


def _run(devices: int, *args, processes: int = 1) -> list[str]:
  """TRAIN in `processes` processes of `devices` CPU devices each; their output."""
  port = '-'
  if processes > 1:
    with socket.socket() as s:
      s.bind(('127.0.0.1', 0))
      port = s.getsockname()[1]
  args = [str(a) for a in args]
  started = [subprocess.Popen(
      [sys.executable, '-c', TRAIN, *args[:4], str(port), str(i), *args[4:]], cwd=REPO,
      env=xla_flags.with_cpu_devices(devices), stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(processes)]
  outputs = []
  for process in started:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-4000:]
    outputs.append(output)
  return outputs


def _images(folder) -> dict[str, np.ndarray]:
  return {name: np.asarray(Image.open(os.path.join(folder, name)), np.int16)
          for name in sorted(os.listdir(folder))}


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp('data')
  return {'unpaired': synthetic.make_unpaired_folder(str(root / 'unpaired'), n_train=8,
                                                     n_test=3),
          'aligned': synthetic.make_aligned_folder(str(root / 'aligned'), n_train=8, n_test=3)}


@pytest.mark.parametrize('kind', KINDS)
def test_a_workdir_moves_between_device_and_process_counts(kind, data, tmp_path, capsys):
  folder = data['aligned' if kind == 'pix2pix' else 'unpaired']
  inputs = tmp_path / 'inputs'
  inputs.mkdir()
  test_folder = os.path.join(folder, 'test') if kind == 'pix2pix' else os.path.join(folder,
                                                                                    'testA')
  for name in sorted(os.listdir(test_folder))[:2]:
    shutil.copy(os.path.join(test_folder, name), inputs / name)
  workdir = tmp_path / 'run'

  # 4 devices train and translate; 1 device translates the same.
  output = _run(4, kind, folder, workdir, 2, inputs, tmp_path / 'on4')[0]
  assert 'trained 1 4 2' in output
  translate.translate_folder(str(workdir), str(inputs), str(tmp_path / 'on1'))
  on4, on1 = _images(tmp_path / 'on4'), _images(tmp_path / 'on1')
  assert on4.keys() == on1.keys() and len(on1) == 2
  assert max(int(np.abs(on4[k] - on1[k]).max()) for k in on1) <= 1

  # Resumed 4 -> 1 here, 1 -> 4, then 4 -> 2 as two processes of one device.
  config = config_for(kind, folder, 4)
  assert int(train.train_and_evaluate(config, str(workdir)).step) == 4
  resumed = capsys.readouterr().err
  assert 'Resuming from the checkpoint at step 2.' in resumed
  if kind == 'cyclegan':  # 4 devices' pools of 4 images each (2 steps of one image).
    assert ('The checkpoint was trained on 4 device(s), now on 1: parameters and optimiser '
            'state resharded; the 16 images stored in 8 history pools dealt in turn to 2 '
            'pools of 50, 16 kept (docs/training.md).') in resumed
  assert 'trained 1 4 6' in _run(4, kind, folder, workdir, 6, '-', '-')[0]
  outputs = _run(1, kind, folder, workdir, 8, '-', '-', processes=2)
  assert all('trained 2 2 8' in o for o in outputs)
  assert sorted(int(s) for s in os.listdir(checkpoints.checkpoint_dir(str(workdir)))) == [
      2, 4, 6, 8]

  # The checkpoint of two processes, scored by one.
  weights = str(tmp_path / 'inception.npz')
  inception_weights.save(weights, inception.init_variables(seed=0))
  scores = evaluate.evaluate_workdir(str(workdir), inception_weights=weights)
  assert scores['step'] == 8
  written = json.loads((workdir / 'eval' / 'step_00000008.json').read_text())
  directions = ['AtoB'] if kind in ('pix2pix', 'cut') else ['AtoB', 'BtoA']
  assert [d for d in written if d not in ('step', 'protocol')] == directions
  assert all(np.isfinite(written[d]['fid']) and written[d] == scores[d] for d in directions)


SWEEP = '''
import sys
from cyclegan_jax import train
from tests.test_topology import config_for
config = config_for('cyclegan', sys.argv[1], 2)
config.train.batch_size = 2
config.sweep.seed = (0, 1)
train.train_and_evaluate(config, sys.argv[2])
'''


def test_a_sweep_resumes_on_another_device_count(data, tmp_path, capsys):
  """Two seeds on 4 devices (each run on 2), resumed on 1 device (both runs
  on it): each run's pools are re-laid for its one device."""
  workdir = tmp_path / 'sweep'
  result = subprocess.run([sys.executable, '-c', SWEEP, data['unpaired'], str(workdir)],
                          cwd=REPO, env=xla_flags.with_cpu_devices(4), capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  config = config_for('cyclegan', data['unpaired'], 4)
  config.train.batch_size = 2
  config.sweep.seed = (0, 1)
  state = train.train_and_evaluate(config, str(workdir))
  assert np.asarray(state.step).tolist() == [4, 4]
  assert state.pool_fake_a.images.shape[:2] == (2, 1)  # (runs, devices).
  err = capsys.readouterr().err
  assert ('The checkpoint was trained on 2 device(s) per run, now on 1: parameters and '
          'optimiser state resharded; the 16 images stored in 8 history pools dealt in turn '
          'to 4 pools of 50, 16 kept (docs/training.md).') in err, err[-3000:]
