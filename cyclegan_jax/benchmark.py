"""Times the real CycleGAN train step on synthetic data; prints one JSON line.

  python -m cyclegan_jax.benchmark --config=configs/horse2zebra.py --steps=20 --warmup=3
  python -m cyclegan_jax.benchmark --config=configs/tiny.py --config.model.dtype=bfloat16

The step is `train_step.make_train_step` on a batch of uniform noise of the
configured size, made once and reused. `images_per_second` counts one image as
one A plus one B sample, as the official code counts a training iteration
(`batch_size` pairs), so it is `config.train.batch_size / median_step_seconds`.
`flops_per_step` is XLA's cost analysis, summed over all devices; `mfu` divides
the achieved rate by the dense peak of the devices (null where the peak is not
in PEAK_TFLOPS, e.g. on CPU). Memory: `xla_memory_bytes` is what XLA's
memory analysis of the compiled program says one call holds at its peak
(arguments + outputs + temporaries, less donated buffers), on any backend;
`process_peak_rss_bytes` the process's peak resident memory (on CPU the
devices' memory is the process's). `--steps=0` compiles and reports memory
without running a step: the way to size images too large to time here.

`--runs=R` (train) also times a sweep of R seeds (`config.sweep.seed`, one
program for all runs, docs/sweeps.md) on the same noise, alternating with the
single run: `runs_images_per_second` counts every run's images, and
`runs_speedup` divides it by the single run's `images_per_second`.

`--loop` (train) also times the training loop's way of running the step:
`--steps` steps queued one after the other as train.py queues them (each
step's batch a host array sent to the devices two steps ahead, the metrics
summed on the device, nothing fetched until the end), against the same
number of steps each waited for, alternating, three times:
`loop_seconds_per_step` and `step_alone_seconds_per_step` are the medians,
`loop_over_step` their ratio (about 1: the loop adds nothing to the step).

`--task=data` times the real input pipeline instead, on the configured data
(config.data.image_dir or builtin): R runs (`--runs`, a sweep's runs sharing
one store of decoded images, config.data.decoded_cache_mb) each building
`config.train.batch_size` pairs per step in its own threads, as training
pulls them. `pairs_per_second` counts the pairs of all runs; `decodes` is
how many images were decoded and resized.
"""

import json
import os
import resource
import sys
import time

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags
import jax
import jax.numpy as jnp
import numpy as np

from cyclegan_jax import config_checks
from cyclegan_jax import deterministic_ops
from cyclegan_jax import families
from cyclegan_jax import generation
from cyclegan_jax import memory
from cyclegan_jax import state as state_lib
from cyclegan_jax import sweeps
from cyclegan_jax import train
from cyclegan_jax import train_step as train_step_lib
from cyclegan_jax import xla_cpu_options

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Training configuration file.',
                                lock_config=True)
flags.DEFINE_integer('steps', 20, 'Timed train steps; 0: compile and report memory only.')
flags.DEFINE_integer('warmup', 3, 'Untimed train steps after compiling.')
TASKS = ('train', 'translate', 'data')
flags.DEFINE_enum('task', 'train', TASKS,
                  'train: the whole train step. translate: one generator in test mode on '
                  'config.train.batch_size images of config.data.crop_size. data: the input '
                  'pipeline on the configured images (pairs per second).')
flags.DEFINE_integer('runs', 1, 'train: also time a sweep of this many seeds in one program, '
                     'alternating with one run. data: this many runs reading the same images.')
flags.DEFINE_bool('loop', False, 'train: also time --steps steps queued as the training loop '
                  'queues them (batches sent ahead, metrics kept on the device), against as '
                  'many steps each waited for.')
flags.DEFINE_string('compare', '', 'torch: also time the official PyTorch step (or '
                    'generator), alternating with ours; needs the torch extra. onnx (with '
                    '--task=translate): also time the generator exported to ONNX, run by ONNX '
                    'Runtime on CPU; needs the export extra.')

# Dense peak TFLOP/s per device: (bfloat16, float32). The first substring of
# device_kind that matches wins. float32 on NVIDIA: TF32 tensor cores, which XLA
# uses for f32 convolutions and matmuls by default. On TPU, f32 matmuls run as
# bf16 passes at the default precision, so both columns are the bf16 peak.
PEAK_TFLOPS = (
    ('H100 PCIe', (756.0, 378.0)),
    ('H100', (989.0, 494.7)),  # SXM.
    ('H200', (989.0, 494.7)),
    ('A100', (312.0, 156.0)),
    ('TPU v4', (275.0, 275.0)),
    ('TPU v5 lite', (197.0, 197.0)),  # v5e.
    ('TPU v5e', (197.0, 197.0)),
    ('TPU v5', (459.0, 459.0)),  # v5p.
    ('TPU v6', (918.0, 918.0)),  # v6e ("TPU v6 lite").
)


def peak_tflops(device_kind: str, dtype: str) -> float | None:
  for key, (bf16, fp32) in PEAK_TFLOPS:
    if key.lower() in device_kind.lower():
      return bf16 if dtype == 'bfloat16' else fp32
  return None


def flops_per_step(compiled) -> float | None:
  """All devices' FLOPs for one step, from XLA's cost analysis.

  The analysis is of the SPMD program that each device runs, so its 'flops' are
  per device: with the same global batch, 2 CPU devices report about half of
  what 1 device does (tiny config, batch 4: 9.03e8 on 1 device, 4.53e8 on 2).
  Hence the product with the device count.
  """
  try:
    analysis = compiled.cost_analysis()
  except Exception:  # Not implemented on every backend.
    return None
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  flops = (analysis or {}).get('flops')
  return float(flops) * jax.device_count() if flops and flops > 0 else None


def process_peak_rss_bytes() -> int:
  """This process's peak resident memory (Linux reports kilobytes)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_memory_bytes() -> int | None:
  peaks = []
  for device in jax.local_devices():
    try:
      stats = device.memory_stats()
    except Exception:
      stats = None
    if stats and 'peak_bytes_in_use' in stats:
      peaks.append(int(stats['peak_bytes_in_use']))
  return max(peaks) if peaks else None


def _our_train_step(config):
  """(run one step and wait, the compiled step, compile seconds) for the real jitted train step
  on one batch of uniform noise, made once and reused."""
  num_devices, batch_size = jax.device_count(), config.train.batch_size
  config_checks.check_global_batch(batch_size, num_devices)
  crop = config.data.crop_size
  mesh = jax.make_mesh((1, num_devices), ('runs', 'data'))  # One run, as train.py holds it.
  state = state_lib.create_sharded_state([config], (crop, crop), mesh, steps_per_epoch=1000)
  train_step = train_step_lib.make_train_step(config, mesh, state, steps_per_epoch=1000)
  values = train_step_lib.sweep_values(config, mesh)

  sharding = jax.NamedSharding(mesh, jax.P('runs', 'data'))
  rng = np.random.default_rng(config.seed)
  local_batch = batch_size // jax.process_count()
  channels = families.get(config).domain_channels(config)
  domains = families.batch_domains(config)
  put = lambda host: {key: jax.make_array_from_process_local_data(
      sharding, x[None], (1, batch_size, *x.shape[1:])) for key, x in host.items()}
  # Noise as 8-bit images come: uint8 pixels, mapped to [-1, 1] in the step.
  noise = lambda: {key: rng.integers(0, 256, (local_batch, crop, crop, channels[domain]),
                                     dtype=np.uint8) for key, domain in domains.items()}
  batch = put(noise())
  start = time.perf_counter()
  compiled = train_step.lower(state, batch, values).compile()
  compile_seconds = time.perf_counter() - start

  def run():
    nonlocal state  # Donated to the step: each step takes the one before's state.
    state, metrics = jax.block_until_ready(compiled(state, batch, values))
    # UNSB: the step index k the step drew (its cost grows with k).
    run.time_index = int(metrics['time_index'][0]) if 'time_index' in metrics else None

  # As train.py runs steps: host batches (a few, in turn) sent to the devices
  # ahead of their step, metrics summed on the device, one wait at the end.
  host_batches = [noise() for _ in range(4)]

  def run_loop(count: int) -> None:
    nonlocal state
    device_batches = train.prefetched(
        (host_batches[i % len(host_batches)] for i in range(count)), put)
    sums = None
    for _ in range(count):
      state, metrics = compiled(state, next(device_batches), values)
      sums = metrics if sums is None else train.add_metrics(sums, metrics)
    jax.block_until_ready((state, sums))

  run.loop = run_loop
  return run, compiled, compile_seconds


def _noise_batch(config, shape_prefix, sharding, channels):
  rng = np.random.default_rng(config.seed)
  crop = config.data.crop_size
  return {key: jax.device_put(
      rng.uniform(-1, 1, (*shape_prefix, crop, crop, channels[domain])).astype(np.float32),
      sharding) for key, domain in families.batch_domains(config).items()}


def _sweep_train_step(config, num_runs: int):
  """(run one step of every run and wait, compile seconds) for a sweep of
  `num_runs` seeds, config.seed onwards, on one batch of noise per run."""
  if jax.process_count() > 1:
    raise ValueError('--runs times a sweep, which trains in one process; run it with one')
  config = ml_collections.ConfigDict(config.to_dict())
  config.sweep.seed = tuple(range(config.seed, config.seed + num_runs))
  runs = sweeps.runs(config)
  mesh = jax.make_mesh(sweeps.mesh_shape(num_runs, jax.device_count()), ('runs', 'data'))
  config_checks.check_global_batch(config.train.batch_size, mesh.shape['data'])
  crop = config.data.crop_size
  state = state_lib.create_sharded_state(
      [sweeps.run_config(config, run) for run in runs], (crop, crop), mesh, steps_per_epoch=1000)
  train_step = train_step_lib.make_train_step(config, mesh, state, steps_per_epoch=1000)
  values = train_step_lib.sweep_values(config, mesh)
  batch = _noise_batch(config, (num_runs, config.train.batch_size),
                       jax.NamedSharding(mesh, jax.P('runs', 'data')),
                       families.get(config).domain_channels(config))
  start = time.perf_counter()
  compiled = train_step.lower(state, batch, values).compile()
  compile_seconds = time.perf_counter() - start

  def run():
    nonlocal state
    state, _ = jax.block_until_ready(compiled(state, batch, values))

  return run, compile_seconds


def run_data_benchmark(config, steps: int, warmup: int, num_runs: int = 1) -> dict:
  """Times the input pipeline: `num_runs` runs (seeds config.seed onwards)
  reading config's training images as a sweep does, one step of each run at a
  time, as the training loop pulls them. Returns the JSON-ready results."""
  if steps < 1 or warmup < 0 or num_runs < 1:
    raise ValueError(f'--task=data needs --steps >= 1, --warmup >= 0 and --runs >= 1, got '
                     f'{steps}, {warmup} and {num_runs}')
  family = families.get(config)  # The training data as train.py opens it.
  shard = (config.seed, config.train.batch_size, jax.process_index(), jax.process_count())
  batches, _, description = family.open_training_data(config, shard,
                                                      family.domain_channels(config))
  seeds = range(config.seed, config.seed + num_runs)
  runs = (batches.for_seeds(seeds, config.data.decoded_cache_mb) if num_runs > 1
          else [batches])
  iterators = [run.iterate(0, config.data.num_workers) for run in runs]
  for _ in range(warmup):
    for iterator in iterators:
      next(iterator)
  start = time.perf_counter()
  for _ in range(steps):
    for iterator in iterators:
      next(iterator)
  seconds = time.perf_counter() - start
  for iterator in iterators:
    iterator.close()
  decoded = runs[0].decoded
  pairs = steps * num_runs * batches.local_batch
  return {
      'task': 'data',
      'data': description,
      'runs': num_runs,
      'image_size': config.data.crop_size,
      'load_size': config.data.load_size,
      'preprocess': config.data.preprocess,
      'batch_size': config.train.batch_size,
      'num_workers': config.data.num_workers,
      'decoded_cache_mb': config.data.decoded_cache_mb if decoded else 0,
      'steps': steps,
      'warmup': warmup,
      'seconds': seconds,
      'pairs_per_second': pairs / seconds,
      'decodes': decoded.decodes if decoded else None,
      'decode_requests': decoded.requests if decoded else None,
      'cpu_count': os.cpu_count(),
  }


def _translation_inputs(config):
  """(generator, its params, a batch of images) that --task=translate times."""
  if jax.device_count() > 1:
    raise ValueError('--task=translate runs one generator on one device; run it with one '
                     f'device (this process sees {jax.device_count()})')
  crop, batch_size = config.data.crop_size, config.train.batch_size
  # gen_ab, or pix2pix's gen.
  family = families.get(config)
  network, generator = next(iter(family.create_generators(config.model).items()))
  channels, _ = family.generator_channels(config.model, network)
  params = jax.jit(generator.init)(jax.random.PRNGKey(config.seed),
                                   jnp.zeros((1, crop, crop, channels)))['params']
  images = jnp.asarray(np.random.default_rng(config.seed).uniform(
      -1, 1, (batch_size, crop, crop, channels)).astype(np.float32))
  return generator, params, images


def _our_translation(config):
  """(translate one batch and wait, the compiled generator, compile seconds) for the generator
  in test mode, jitted as `--mode=translate` runs it."""
  generator, params, images = _translation_inputs(config)
  start = time.perf_counter()
  compiled = generation.generate.lower(generator, params, images).compile()
  compile_seconds = time.perf_counter() - start
  return (lambda: jax.block_until_ready(compiled(params, images))), compiled, compile_seconds


class _Sweep:
  """A sweep's step, timed in turn with the single run's."""

  def __init__(self, run, compile_seconds):
    self.run, self.compile_seconds = run, compile_seconds


LOOP_REPEATS = 3  # --loop: alternations of the loop and the steps alone.


def _time(run) -> float:
  start = time.perf_counter()
  run()
  return time.perf_counter() - start


def _over_time_indices(prefix: str, times: list, indices: list) -> dict:
  """The mean step time of each step index k, and their mean: the cost of
  a step averaged over k, as training draws every k equally often."""
  by_k = {}
  for seconds, k in zip(times, indices):
    by_k.setdefault(int(k), []).append(seconds)
  means = {k: float(np.mean(v)) for k, v in sorted(by_k.items())}
  return {f'{prefix}mean_step_seconds_by_k': means,
          f'{prefix}steps_by_k': {k: len(v) for k, v in sorted(by_k.items())},
          f'{prefix}mean_step_seconds_over_k': float(np.mean(list(means.values())))}


def run_benchmark(config, steps: int, warmup: int, task: str = 'train',
                  compare: str = '', num_runs: int = 1, loop: bool = False) -> dict:
  """Compiles and times our train step (or translation); with compare='torch'
  the official PyTorch one too, with num_runs > 1 a sweep of that many seeds,
  alternating, at the same size, batch and precision. task='data' times the
  input pipeline (run_data_benchmark). Returns the JSON-ready results."""
  if task == 'data':
    return run_data_benchmark(config, steps, warmup, num_runs)
  if loop and (task != 'train' or steps < 1):
    raise ValueError(f'--loop times training steps: it needs --task=train and --steps >= 1, '
                     f'got --task={task} --steps={steps}')
  if num_runs < 1 or (num_runs > 1 and (task != 'train' or compare)):
    raise ValueError(f'--runs={num_runs}: expected 1, or more with --task=train and no '
                     '--compare')
  if steps < 0 or warmup < 0:
    raise ValueError(f'need --steps >= 0 and --warmup >= 0, got {steps} and {warmup}')
  if task not in TASKS:
    raise ValueError(f'--task={task!r}: expected one of {", ".join(TASKS)}')
  if compare not in ('', 'torch', 'onnx'):
    raise ValueError(f'--compare={compare!r}: expected torch, onnx, or nothing')
  if compare == 'onnx' and task != 'translate':
    raise ValueError('--compare=onnx times an exported generator: it needs --task=translate')
  theirs = None
  if compare == 'torch':
    from cyclegan_jax import torch_reference  # Only here: it needs the torch extra.
    theirs = torch_reference.Baseline(config, task, jax.devices()[0].platform,
                                     jax.device_count())
  elif compare == 'onnx':
    from cyclegan_jax import export  # Only here: it needs the export extra.
    theirs = export.OnnxRuntimeRunner(*_translation_inputs(config))
  ours, compiled, compile_seconds = (
      _our_train_step if task == 'train' else _our_translation)(config)
  if num_runs > 1:
    theirs = _Sweep(*_sweep_train_step(config, num_runs))

  # Alternating, so that a slow spell of a shared machine falls on both.
  times, their_times, indices, their_indices = [], [], [], []
  for i in range(warmup + steps if steps else 0):
    seconds = _time(ours)
    their_seconds = _time(theirs.run) if theirs else None
    if i >= warmup:
      times.append(seconds)
      their_times.append(their_seconds)
      indices.append(getattr(ours, 'time_index', None))
      their_indices.append(getattr(theirs, 'time_index', None))
  median = float(np.median(times)) if times else None
  p90 = float(np.percentile(times, 90)) if times else None
  loop_times, alone_times = [], []
  for _ in range(LOOP_REPEATS if loop else 0):
    alone_times.append(sum(_time(ours) for _ in range(steps)) / steps)
    loop_times.append(_time(lambda: ours.loop(steps)) / steps)

  num_devices, batch_size = jax.device_count(), config.train.batch_size
  dtype = config.model.dtype
  device_kind = jax.devices()[0].device_kind
  flops = flops_per_step(compiled)
  tflops = flops / median / 1e12 if flops and median else None
  peak = peak_tflops(device_kind, dtype)
  result = {
      'task': task,
      'device_kind': device_kind,
      'platform': jax.devices()[0].platform,
      'device_count': num_devices,
      'process_count': jax.process_count(),
      'image_size': config.data.crop_size,
      'global_batch': batch_size,
      'dtype': dtype,
      'generator': config.model.generator,
      'discriminator': config.model.discriminator,
      'remat': bool(config.model.remat),
      'compile_seconds': compile_seconds,
      'median_step_seconds': median,
      'p90_step_seconds': p90,
      'images_per_second': batch_size / median if median else None,
      'flops_per_step': flops,
      'tflops_per_second': tflops,
      'peak_tflops_per_device': peak,
      'mfu': tflops / (peak * num_devices) if tflops and peak else None,
      'peak_memory_bytes': peak_memory_bytes(),
      'xla_memory_bytes': memory.compiled_memory_bytes(compiled),
      'process_peak_rss_bytes': process_peak_rss_bytes(),
      'steps': steps,
      'warmup': warmup,
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }
  if times and indices[0] is not None:  # UNSB: a step's cost depends on its k.
    result.update(_over_time_indices('', times, indices))
    if theirs and their_indices[0] is not None:
      result.update(_over_time_indices('torch_', their_times, their_indices))
      result['time_ratio_vs_torch_over_k'] = (result['mean_step_seconds_over_k']
                                              / result['torch_mean_step_seconds_over_k'])
  if loop:
    result['loop_seconds_per_step'] = float(np.median(loop_times))
    result['step_alone_seconds_per_step'] = float(np.median(alone_times))
    result['loop_over_step'] = result['loop_seconds_per_step'] / result[
        'step_alone_seconds_per_step']
  if num_runs > 1:
    result['runs'] = num_runs
    result['runs_compile_seconds'] = theirs.compile_seconds
    if times:
      sweep_median = float(np.median(their_times))
      result.update({
          'runs_median_step_seconds': sweep_median,
          'runs_p90_step_seconds': float(np.percentile(their_times, 90)),
          'runs_images_per_second': num_runs * batch_size / sweep_median,
          'runs_speedup': num_runs * median / sweep_median,
      })
  elif compare == 'onnx' and times:
    their_median = float(np.median(their_times))
    result.update({
        'onnxruntime_version': theirs.version,
        'onnxruntime_device': theirs.device_name,
        'onnxruntime_median_step_seconds': their_median,
        'onnxruntime_p90_step_seconds': float(np.percentile(their_times, 90)),
        'onnxruntime_images_per_second': batch_size / their_median,
        # Ours over theirs: below 1, JAX takes less time than ONNX Runtime.
        'time_ratio_vs_onnxruntime': median / their_median,
    })
  elif theirs and times:
    their_median = float(np.median(their_times))
    result.update({
        'torch_version': theirs.version,
        'torch_device': theirs.device_name,
        'torch_autocast': theirs.autocast_dtype,
        'torch_median_step_seconds': their_median,
        'torch_p90_step_seconds': float(np.percentile(their_times, 90)),
        'torch_images_per_second': batch_size / their_median,
        'torch_peak_memory_bytes': theirs.peak_memory_bytes(),
        # Ours over theirs: below 1, our step takes less time.
        'time_ratio_vs_torch': median / their_median,
    })
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.config is None:
    raise app.UsageError('--config is required, e.g. --config=configs/tiny.py')
  xla_cpu_options.set_defaults()  # As main.py does; before JAX starts its backend.
  deterministic_ops.set_flag(FLAGS.config.deterministic)  # As training runs.
  try:
    result = run_benchmark(FLAGS.config, FLAGS.steps, FLAGS.warmup, FLAGS.task, FLAGS.compare,
                           FLAGS.runs, FLAGS.loop)
  except ImportError as e:
    if FLAGS.compare == 'onnx':
      sys.exit(f'benchmark: error: {e}')
    sys.exit(f'benchmark: error: --compare=torch needs PyTorch: pip install -e ".[torch]" ({e})')
  except ValueError as e:
    sys.exit(f'benchmark: error: {e}')  # One line on stderr, exit status 1.
  print(json.dumps(result), flush=True)


if __name__ == '__main__':
  app.run(main)
