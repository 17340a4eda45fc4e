"""Same config and seed, same bits: reruns, and runs killed and resumed."""

import os
import random
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import tiny
from cyclegan_jax import checkpoints
from cyclegan_jax import train

# End-to-end: several processes, or runs killed and resumed.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS = 80
# Every source of randomness in play: shuffled epochs (12 images, batch 2),
# random B images, crops and flips, dropout, and a pool that fills and swaps.
OVERRIDES = {'train.num_steps': NUM_STEPS, 'train.batch_size': 2, 'train.pool_size': 3,
             'model.dropout': True, 'checkpoint_every_steps': 10, 'keep_checkpoints': 20,
             'log_every_steps': 10, 'sample_every_steps': 1000}


def _config(image_folder, seed=0):
  config = tiny.get_config()
  config.data.image_dir = image_folder
  config.seed = seed
  for field, value in OVERRIDES.items():
    section, _, name = field.rpartition('.')
    (config[section] if section else config)[name] = value
  return config


def _final_state(workdir) -> dict:
  """The whole saved train state at the last step: parameters, Adam moments,
  pools, step and RNG key, as numpy arrays."""
  manager = ocp.CheckpointManager(checkpoints.checkpoint_dir(str(workdir)))
  assert manager.latest_step() == NUM_STEPS
  restored = manager.restore(NUM_STEPS, args=ocp.args.StandardRestore())
  return jax.tree.map(np.asarray, restored)


def _identical(a, b) -> bool:
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(leaves_a) == len(leaves_b) and all(
      x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b))


def _command(image_folder, workdir):
  return [sys.executable, 'main.py', '--config=configs/tiny.py', f'--workdir={workdir}',
          f'--config.data.image_dir={image_folder}',
          *(f'--config.{field}={value}' for field, value in OVERRIDES.items())]


@pytest.fixture(scope='module')
def uninterrupted(image_folder, tmp_path_factory):
  """The final state of one uninterrupted run with seed 0."""
  workdir = tmp_path_factory.mktemp('uninterrupted')
  state = train.train_and_evaluate(_config(image_folder), str(workdir))
  assert int(state.step) == NUM_STEPS
  return _final_state(workdir)


def test_reruns_match_bit_for_bit_and_seeds_differ(image_folder, uninterrupted, tmp_path):
  train.train_and_evaluate(_config(image_folder), str(tmp_path / 'again'))
  assert _identical(_final_state(tmp_path / 'again'), uninterrupted)
  train.train_and_evaluate(_config(image_folder, seed=1), str(tmp_path / 'other_seed'))
  other = _final_state(tmp_path / 'other_seed')
  assert not np.array_equal(other['gen_ab']['params']['Conv_0']['kernel'],
                            uninterrupted['gen_ab']['params']['Conv_0']['kernel'])


def _complete_steps(workdir) -> list[int]:
  folder = workdir / 'checkpoints'
  return sorted(int(s) for s in os.listdir(folder) if s.isdigit()) if folder.is_dir() else []


def kill_after_new_checkpoints(command, workdir, kills: int, max_pause: float) -> list[int]:
  """Runs `command` (main.py training `workdir`) `kills` times, each killed
  with SIGKILL at a random moment up to `max_pause` s after it completed a
  checkpoint newer than the last; returns the newest complete step before
  each start."""
  rng = random.Random(0)
  resumed_from = []
  for _ in range(kills):
    before = (_complete_steps(workdir) or [0])[-1]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while ((_complete_steps(workdir) or [0])[-1] <= before and process.poll() is None
           and time.time() < deadline):
      time.sleep(0.01)
    time.sleep(rng.uniform(0, max_pause))
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed_from.append(before)
  return resumed_from


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_sigint_saves_and_resumes_bit_for_bit(image_folder, uninterrupted, tmp_path,
                                                        signum):
  workdir = tmp_path / 'stopped'
  command = _command(image_folder, workdir)
  process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 300
  while not _complete_steps(workdir) and process.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  process.send_signal(signum)
  output, _ = process.communicate(timeout=300)
  assert process.returncode == 0, output[-3000:]
  stopped = re.search(rf'Stopped by {signum.name} after step (\d+) and saved a checkpoint '
                      r'there; run the same command to resume\.', output)
  assert stopped, output[-3000:]
  step = int(stopped.group(1))
  assert 10 <= step < NUM_STEPS and _complete_steps(workdir)[-1] == step
  if signum == signal.SIGINT:
    return  # Resuming is the same as after SIGTERM, checked below.

  resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'Resuming from the checkpoint at step {step}' in resumed.stderr
  assert _identical(_final_state(workdir), uninterrupted)


def test_repeated_sigkill_at_random_moments_resumes_bit_for_bit(image_folder, uninterrupted,
                                                                tmp_path):
  """Killed with SIGKILL again and again, each time at a random moment after
  a new checkpoint; with a checkpoint every 2 steps, some kills land
  mid-save. Each restart resumes from the newest complete checkpoint."""
  workdir = tmp_path / 'killed'
  command = [*_command(image_folder, workdir), '--config.checkpoint_every_steps=2']
  resumed_from = kill_after_new_checkpoints(command, workdir, 4, 0.4)
  assert len(set(resumed_from)) == 4 and resumed_from[-1] < NUM_STEPS, resumed_from
  final = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert final.returncode == 0, final.stderr[-3000:]
  assert _identical(_final_state(workdir), uninterrupted)
