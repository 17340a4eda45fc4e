"""The train-step benchmark: the library function and the command line."""

import json
import os
import subprocess
import sys

import pytest

from configs import tiny
from cyclegan_jax import benchmark
from cyclegan_jax import deterministic_ops
from cyclegan_jax import xla_cpu_options

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = {
    'task', 'device_kind', 'platform', 'device_count', 'process_count', 'image_size', 'global_batch',
    'dtype', 'generator', 'discriminator', 'remat', 'compile_seconds', 'median_step_seconds',
    'p90_step_seconds', 'images_per_second', 'flops_per_step', 'tflops_per_second',
    'peak_tflops_per_device', 'mfu', 'peak_memory_bytes', 'xla_memory_bytes',
    'process_peak_rss_bytes', 'steps', 'warmup', 'xla_flags'}


def _run_cli(*args, xla_flags=None):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  if xla_flags:
    env['XLA_FLAGS'] = xla_flags
  return subprocess.run([sys.executable, '-m', 'cyclegan_jax.benchmark',
                         '--config=configs/tiny.py', *args],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_peak_table():
  assert benchmark.peak_tflops('NVIDIA H100 80GB HBM3', 'bfloat16') == 989.0
  assert benchmark.peak_tflops('NVIDIA H100 80GB HBM3', 'float32') == 494.7
  assert benchmark.peak_tflops('NVIDIA H200', 'bfloat16') == 989.0
  assert benchmark.peak_tflops('NVIDIA A100-SXM4-80GB', 'float32') == 156.0
  assert benchmark.peak_tflops('TPU v5 lite', 'bfloat16') == 197.0
  assert benchmark.peak_tflops('TPU v5', 'bfloat16') == 459.0
  assert benchmark.peak_tflops('cpu', 'float32') is None


@pytest.mark.slow
def test_cli_prints_one_json_line():
  proc = _run_cli('--steps=3', '--warmup=1')
  assert proc.returncode == 0, proc.stderr
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert set(result) == KEYS
  assert result['image_size'] == 32 and result['global_batch'] == 1
  assert result['device_count'] == 1 and result['platform'] == 'cpu'
  assert result['dtype'] == 'float32' and result['generator'] == 'resnet_2blocks'
  assert (result['steps'], result['warmup']) == (3, 1)
  for key in ('compile_seconds', 'median_step_seconds', 'p90_step_seconds',
              'images_per_second', 'flops_per_step', 'tflops_per_second'):
    assert isinstance(result[key], float) and result[key] > 0, key
  assert result['p90_step_seconds'] >= result['median_step_seconds']
  assert result['images_per_second'] == pytest.approx(1 / result['median_step_seconds'])
  assert result['tflops_per_second'] == pytest.approx(
      result['flops_per_step'] / result['median_step_seconds'] / 1e12)
  assert result['peak_tflops_per_device'] is None and result['mfu'] is None  # CPU.
  # Memory on CPU too: XLA's analysis of the step (about 4 MB of parameters,
  # Adam moments and pools alone) and the process's peak.
  assert result['xla_memory_bytes'] > 4e6 and result['process_peak_rss_bytes'] > 1e8
  assert result['remat'] is False
  # The entry point's default XLA:CPU option and the deterministic-ops flag
  # of config.deterministic's default, reported with the numbers.
  defaults = {}
  xla_cpu_options.set_defaults(defaults)
  deterministic_ops.set_flag(True, defaults)
  assert result['xla_flags'] == defaults.get('XLA_FLAGS', '')


@pytest.mark.slow
def test_steps_zero_compiles_and_reports_memory_only():
  """--steps=0 sizes images too large to time: compile, memory, no timings;
  remat's memory is reported beside the plain step's."""
  memory = {}
  for remat in (False, True):
    proc = _run_cli('--steps=0', '--warmup=0', f'--config.model.remat={remat}')
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result) == KEYS and result['remat'] is remat
    assert result['median_step_seconds'] is None and result['images_per_second'] is None
    assert result['compile_seconds'] > 0 and result['xla_memory_bytes'] > 0
    memory[remat] = result['xla_memory_bytes']
  assert memory[True] <= memory[False] * 1.05


@pytest.mark.slow
def test_cli_indivisible_batch_is_a_clean_error():
  proc = _run_cli('--config.train.batch_size=3',
                  xla_flags='--xla_force_host_platform_device_count=2')
  assert proc.returncode == 1
  assert 'Traceback' not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert 'config.train.batch_size=3' in last and '2 devices' in last, proc.stderr
  assert not proc.stdout.strip()


TORCH_KEYS = {'torch_version', 'torch_device', 'torch_autocast', 'torch_median_step_seconds',
              'torch_p90_step_seconds', 'torch_images_per_second', 'torch_peak_memory_bytes',
              'time_ratio_vs_torch'}


@pytest.mark.slow
@pytest.mark.parametrize('task', ['train', 'translate'])
def test_compare_with_torch_prints_both_sides(task):
  pytest.importorskip('torch')
  proc = _run_cli('--steps=2', '--warmup=1', '--compare=torch', f'--task={task}')
  assert proc.returncode == 0, proc.stderr
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert set(result) == KEYS | TORCH_KEYS
  assert result['task'] == task and result['torch_device'] == 'cpu'
  assert result['torch_autocast'] is None and result['torch_peak_memory_bytes'] is None
  for key in ('torch_median_step_seconds', 'torch_images_per_second', 'time_ratio_vs_torch'):
    assert isinstance(result[key], float) and result[key] > 0, key
  assert result['time_ratio_vs_torch'] == pytest.approx(
      result['median_step_seconds'] / result['torch_median_step_seconds'])
  assert result['torch_images_per_second'] == pytest.approx(
      1 / result['torch_median_step_seconds'])


@pytest.mark.slow
def test_compare_refuses_what_the_official_code_does_not_have():
  pytest.importorskip('torch')
  proc = _run_cli('--compare=torch', '--config.model.generator=unet_32')
  assert proc.returncode == 1 and 'Traceback' not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert "config.model.generator='unet_32'" in last, proc.stderr


def test_compare_with_onnx_runtime_times_the_exported_generator():
  pytest.importorskip('onnxruntime')
  result = benchmark.run_benchmark(tiny.get_config(), steps=2, warmup=1, task='translate',
                                   compare='onnx')
  assert set(result) - KEYS == {
      'onnxruntime_version', 'onnxruntime_device', 'onnxruntime_median_step_seconds',
      'onnxruntime_p90_step_seconds', 'onnxruntime_images_per_second',
      'time_ratio_vs_onnxruntime'}
  assert result['time_ratio_vs_onnxruntime'] == pytest.approx(
      result['median_step_seconds'] / result['onnxruntime_median_step_seconds'])
  with pytest.raises(ValueError, match='--compare=onnx .* needs --task=translate'):
    benchmark.run_benchmark(tiny.get_config(), steps=1, warmup=0, compare='onnx')


def test_runs_times_a_sweep_side_by_side_with_one_run():
  config = tiny.get_config()
  config.train.batch_size = 1
  result = benchmark.run_benchmark(config, steps=2, warmup=1, num_runs=2)
  assert KEYS <= set(result) and result['runs'] == 2
  assert result['runs_median_step_seconds'] > 0 and result['runs_compile_seconds'] > 0
  assert result['runs_images_per_second'] == pytest.approx(
      2 / result['runs_median_step_seconds'])
  assert result['runs_speedup'] == pytest.approx(
      result['runs_images_per_second'] / result['images_per_second'])
  with pytest.raises(ValueError, match='--runs=2'):
    benchmark.run_benchmark(config, steps=1, warmup=0, task='translate', num_runs=2)


def test_loop_times_queued_steps_beside_the_step_alone():
  """--loop: steps queued as train.py queues them (its prefetching and its
  metric sums on the device), against as many steps each waited for."""
  result = benchmark.run_benchmark(tiny.get_config(), steps=3, warmup=1, loop=True)
  assert KEYS <= set(result)
  assert result['loop_seconds_per_step'] > 0 and result['step_alone_seconds_per_step'] > 0
  assert result['loop_over_step'] == pytest.approx(
      result['loop_seconds_per_step'] / result['step_alone_seconds_per_step'])
  with pytest.raises(ValueError, match='--loop times training steps'):
    benchmark.run_benchmark(tiny.get_config(), steps=1, warmup=0, task='translate', loop=True)


def test_data_task_times_the_input_pipeline_of_several_runs(tmp_path):
  from tests import synthetic  # pylint: disable=import-outside-toplevel
  config = tiny.get_config()
  config.data.image_dir = synthetic.make_unpaired_folder(str(tmp_path), n_train=6, n_test=2)
  config.train.batch_size = 2
  one = benchmark.run_benchmark(config, steps=3, warmup=1, task='data')
  assert one['runs'] == 1 and one['decodes'] is None and one['pairs_per_second'] > 0
  four = benchmark.run_benchmark(config, steps=3, warmup=1, task='data', num_runs=4)
  # 4 runs x 4 steps x 2 pairs = 64 pairs from 12 files: each decoded once.
  assert four['runs'] == 4 and four['decodes'] <= 12 and four['decode_requests'] >= 64  # Threads read ahead too.
  assert four['pairs_per_second'] > 0 and four['decoded_cache_mb'] == 2048
  with pytest.raises(ValueError, match='--steps >= 1'):
    benchmark.run_benchmark(config, steps=0, warmup=0, task='data')
