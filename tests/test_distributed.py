"""Several devices and several processes train the same model as one device."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from cyclegan_jax import distributed
from cyclegan_jax import models
from cyclegan_jax import xla_cpu_options
from tests import xla_flags

# End-to-end: several processes, or runs killed and resumed.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETWORKS = ('gen_ab', 'gen_ba', 'disc_a', 'disc_b')

# Trains the tiny config in a fresh process and saves every network's
# parameters (this process's copy of them) to an .npz file.
TRAIN_AND_SAVE = '''
import sys
import jax, numpy as np
from configs import tiny
from cyclegan_jax import distributed, train
image_dir, workdir, out, batch, steps, port, process_id = sys.argv[1:]
if port != '-':
  distributed.initialize(f'127.0.0.1:{port}', 2, int(process_id))
config = tiny.get_config()
config.data.image_dir = image_dir
config.train.batch_size = int(batch)
config.train.num_steps = int(steps)
config.train.pool_size = 0
state = train.train_and_evaluate(config, workdir)
print('devices', jax.process_index(), jax.process_count(), jax.local_device_count(),
      jax.device_count())
from tests.test_distributed import snapshot
np.savez(out, **snapshot(state, config))
'''


def _start(args, devices, extra_flags=''):
  env = xla_flags.with_cpu_devices(devices, extra_flags)
  return subprocess.Popen([sys.executable, '-c', TRAIN_AND_SAVE, *map(str, args)], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process, timeout=300):
  output, _ = process.communicate(timeout=timeout)
  assert process.returncode == 0, output[-4000:]
  return output


def snapshot(state, config) -> dict[str, np.ndarray]:
  """This process's copy of every parameter, and what each network outputs
  for one fixed input."""
  params = {name: jax.tree.map(lambda x: np.asarray(x.addressable_data(0)),
                               getattr(state, name).params) for name in NETWORKS}
  flat = {f'{name}/{jax.tree_util.keystr(path)}': leaf for name in NETWORKS
          for path, leaf in jax.tree_util.tree_leaves_with_path(params[name])}
  image = np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
  for name in NETWORKS:
    create = models.create_generator if name.startswith('gen') else models.create_discriminator
    net = create(config.model)
    kwargs = {'train': False} if name.startswith('gen') else {}
    flat[f'output/{name}'] = np.asarray(net.apply({'params': params[name]}, image, **kwargs))
  return flat


# jaxlib 0.10's YNNPACK convolutions (its default, which main.py replaces by
# Eigen's: xla_cpu_options.py) sum each image of a batch in the same order
# whatever the batch size, so one device with 4 images and 4 devices with one
# each differ only by the order of the gradient mean. With Eigen's, which
# block the batch differently, Adam turns that rounding noise in near-zero
# gradients into parameter differences of 3e-5 after 3 steps, which would
# hide the errors this test is for. The value below is jaxlib 0.10.2's default
# (its results are bit-identical to leaving the flag unset).
BATCH_INVARIANT_CONVS = (
    f'{xla_cpu_options.YNN_FUSION_FLAG}=individual_dot,individual_convolution,reduce'
    if xla_cpu_options.set_defaults({}) else '')


def test_four_devices_train_like_one(image_folder, tmp_path):
  """Same global batch of 4: one device sees it whole, four see one image
  each and average their gradients. Only the order of float sums differs."""
  runs = {n: _start([image_folder, tmp_path / f'w{n}', tmp_path / f'{n}.npz', 4, 3, '-', 0], n,
                    BATCH_INVARIANT_CONVS) for n in (1, 4)}
  assert 'devices 0 1 1 1' in _finish(runs[1])
  assert 'devices 0 1 4 4' in _finish(runs[4])
  one, four = (dict(np.load(tmp_path / f'{n}.npz')) for n in (1, 4))
  assert one.keys() == four.keys()
  difference = {k: float(np.max(np.abs(one[k] - four[k]))) for k in one}
  # Adam moves a weight by up to ~lr = 2e-4 per step; after 3 steps the
  # kernels and what each network outputs agree to 1e-5 (measured: 1e-7).
  # Not compared: the biases of convs followed by instance norm. The norm
  # subtracts them again, so their true gradient is zero and Adam turns the
  # rounding noise of that zero into steps of +-lr (as in the official code);
  # they do not change any output.
  checked = [k for k in one if k.endswith("['kernel']") or k.startswith('output/')]
  assert len(checked) > 20
  assert max(difference[k] for k in checked) < 1e-5, difference


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_end_with_identical_parameters(image_folder, tmp_path):
  """Two processes of 2 CPU devices each (gloo collectives) train one model
  over 4 devices, each reading its own shard of the data."""
  port = _free_port()
  workdir = tmp_path / 'run'
  processes = [_start([image_folder, workdir, tmp_path / f'p{i}.npz', 4, 3, port, i], 2)
               for i in range(2)]
  outputs = [_finish(p) for p in processes]
  assert 'devices 0 2 2 4' in outputs[0] and 'devices 1 2 2 4' in outputs[1]
  p0, p1 = (dict(np.load(tmp_path / f'p{i}.npz')) for i in range(2))
  assert p0.keys() == p1.keys()
  assert all(np.array_equal(p0[k], p1[k]) for k in p0)
  # Written once: one checkpoint folder per saved step, one sample grid each.
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '3']
  assert sorted(os.listdir(workdir / 'samples')) == ['step_00000002.png', 'step_00000003.png']
  assert len([f for f in os.listdir(workdir) if f.startswith('events.out.tfevents')]) == 1


def test_initialize_needs_all_three_flags_and_is_a_no_op_alone(monkeypatch):
  with pytest.raises(ValueError, match='go together'):
    distributed.initialize('127.0.0.1:1234', None, 0)
  with pytest.raises(ValueError, match='--process_id=2: expected 0 to 1'):
    distributed.initialize('127.0.0.1:1234', 2, 2)
  for name in ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE'):
    monkeypatch.delenv(name, raising=False)
  assert not distributed.launched_as_several_processes()
  distributed.initialize()  # One process, nothing asked: nothing happens.
  assert jax.process_count() == 1
  monkeypatch.setenv('SLURM_NTASKS', '1')
  assert not distributed.launched_as_several_processes()
  monkeypatch.setenv('SLURM_NTASKS', '8')
  assert distributed.launched_as_several_processes()


def test_command_line_refuses_incomplete_process_flags(tmp_path):
  result = subprocess.run(
      [sys.executable, 'main.py', '--config=configs/tiny.py', f'--workdir={tmp_path}',
       '--coordinator_address=127.0.0.1:1234', '--process_id=0'],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr
  assert '--coordinator_address, --num_processes and --process_id go together' in result.stderr
  assert not os.listdir(tmp_path)
