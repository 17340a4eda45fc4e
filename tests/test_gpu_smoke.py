"""The GPU smoke script, run as a lent GPU would run it, here on the CPU."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from cyclegan_jax import checkpoints
from cyclegan_jax import gpu_smoke

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_the_smoke_script_trains_twice_compares_translates_and_benchmarks(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'cyclegan_jax.gpu_smoke', f'--workdir={tmp_path}', '--steps=2',
       '--benchmark=tiny'], cwd=REPO, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  lines = result.stdout.strip().splitlines()
  summary = json.loads(lines[-1])
  assert summary['ok'] and summary['reruns']['bit_identical']
  assert summary['reruns']['steps'] == [2, 2] and summary['reruns']['arrays'] > 100
  assert summary['translation'] == {'images': 8, 'max_grey_level_difference': 0,
                                    'within_1': True}
  [row] = summary['benchmark']
  assert row['row'] == 'tiny config, batch 1' and row['median_step_seconds'] > 0
  # The runs were deterministic ones: main.py set XLA's flag, as train.log records.
  log = (tmp_path / 'run1' / 'train.log').read_text()
  assert "--xla_gpu_deterministic_ops=true" in log
  assert '--xla_gpu_deterministic_ops=true' in row['xla_flags']
  assert any(line.startswith('reruns: ') for line in lines)
  assert 'Traceback' not in result.stderr


def test_runs_that_differ_are_found(tmp_path):
  """compare_runs reports a difference in any array, and its size."""
  for name, value in (('a', 1.0), ('b', 1.5)):
    manager = checkpoints.create_manager(str(tmp_path / name))
    checkpoints.save(manager, {'step': jnp.int32(3), 'w': jnp.array([0.0, value])}, 3)
    checkpoints.wait_until_finished(manager)
  same = gpu_smoke.compare_runs(str(tmp_path / 'a'), str(tmp_path / 'a'))
  assert same == {'bit_identical': True, 'steps': [3, 3], 'arrays': 2,
                  'max_abs_difference': 0.0}
  other = gpu_smoke.compare_runs(str(tmp_path / 'a'), str(tmp_path / 'b'))
  assert not other['bit_identical'] and np.isclose(other['max_abs_difference'], 0.5)
