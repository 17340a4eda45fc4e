"""train_and_evaluate(config, workdir): the training loop. Reads no flags."""

import json
import os
import signal
import threading
import time

from absl import logging
from clu import metric_writers
from clu import periodic_actions
import jax
from jax.experimental import multihost_utils
import numpy as np
from PIL import Image

from cyclegan_jax import checkpoints
from cyclegan_jax import config_checks
from cyclegan_jax import configuration
from cyclegan_jax import console
from cyclegan_jax import evaluate
from cyclegan_jax import families
from cyclegan_jax import memory
from cyclegan_jax import models
from cyclegan_jax.data import input_pipeline
from cyclegan_jax import state as state_lib
from cyclegan_jax import train_step as train_step_lib
from cyclegan_jax import workdir_lock


PROFILE_FIRST_STEP = 10  # Past compilation and the first warm-up steps.


def training_image_size(config, batches) -> tuple[int, int]:
  """(H, W) of every training image."""
  if config.data.preprocess in ('resize_and_crop', 'crop', 'scale_width_and_crop'):
    return (config.data.crop_size, config.data.crop_size)
  return batches.batch(0)['A'].shape[1:3]  # Sizes that follow the data.


def open_training_data(config):
  """(training batches, test images for the sample grids, a line describing
  the data) of config.model.kind (families: paired or unpaired)."""
  shard = (config.seed, config.train.batch_size, jax.process_index(), jax.process_count())
  family = families.get(config)
  return family.open_training_data(config, shard, family.domain_channels(config))


def sample_grid(generators, state, samples, config) -> np.ndarray:
  """The family's rows (CycleGAN: real | translated | reconstructed, for the A
  then the B images; pix2pix: input | output | target), one image per
  forward pass, as 8-bit RGB for viewing whatever the models' channels."""
  rows = families.of_state(state).sample_rows(generators, state, samples, config)
  return input_pipeline.to_uint8(np.concatenate(rows, axis=0))


def record_best(workdir: str, step: int, metrics: dict) -> dict:
  """Updates workdir/eval/best.json, {direction: {'step', 'fid'}}: the step of
  the lowest FID so far in each direction, across resumed runs too."""
  path = os.path.join(workdir, 'eval', 'best.json')
  best = {}
  if os.path.isfile(path):
    with open(path) as f:
      best = json.load(f)
  for direction, values in metrics.items():
    if direction not in best or values['fid'] < best[direction]['fid']:
      best[direction] = {'step': step, 'fid': values['fid']}
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    checkpoints.write_text_atomically(path, json.dumps(best, indent=2))
  return best


class NonFiniteLossError(FloatingPointError):
  """A loss became NaN or infinite; the state of that step was not saved."""


def _check_finite(done: int, metrics, manager) -> None:
  values = jax.device_get(metrics)
  bad = {k: float(v) for k, v in values.items() if not np.isfinite(v)}
  if bad:
    checkpoints.wait_until_finished(manager)  # The checkpoints under way complete.
    name, value = next(iter(bad.items()))
    raise NonFiniteLossError(
        f'step {done}: loss {name} is {value} (non-finite: {", ".join(bad)}); stopped without '
        f'saving this state. The newest checkpoint is step {manager.latest_step()}: lower '
        'config.train.lr, or check the data, then run again (it resumes from there)')


def _step_memory_message(config, image_size) -> tuple[str, str]:
  """(what, advice) for memory.check_fits of the train step."""
  h, w = image_size
  what = f'a train step of {config.train.batch_size} {w}x{h} images'
  options = ['lower config.data.crop_size or config.train.batch_size']
  if not config.model.remat:
    options.append('set config.model.remat=True (recomputes generator blocks)')
  if config.model.dtype == 'float32':
    options.append("set config.model.dtype='bfloat16'")
  return what, ', or '.join(options) + '; checkpoints so far are kept'


class _StopSignals:
  """SIGTERM (preemption) and SIGINT (Ctrl-C) ask the loop to save and stop.

  A second signal of the same kind gets the default behaviour (exit at once).
  """
  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():  # Python's rule for handlers.
      self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
    return self

  def _handle(self, signum, frame):
    del frame
    self.received = signal.Signals(signum).name
    signal.signal(signum, self._previous[signum])

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)

  def stop_now(self, done: int, every: int) -> bool:
    """Whether to stop after step `done`. Processes of a multi-process run
    agree first (each sees its own signal), at every `every`-th step."""
    if jax.process_count() == 1:
      return self.received is not None
    if done % every:
      return False
    flags = multihost_utils.process_allgather(np.int32(self.received is not None))
    return bool(np.any(flags))


def train_and_evaluate(config, workdir: str):
  """Trains CycleGAN or pix2pix (config.model.kind), resuming from the newest
  checkpoint in `workdir`; returns the final state."""
  workdir = os.path.abspath(workdir)
  num_devices = jax.device_count()
  logging.info('Process %d of %d, %d of %d devices here: %s.', jax.process_index(),
               jax.process_count(), jax.local_device_count(), num_devices,
               jax.devices()[0].device_kind)
  config_checks.validate(config, num_devices)
  checkpoints.prepare_workdir(workdir)
  # Before anything is written: a second trainer on this workdir stops here.
  log = 'train.log' if jax.process_index() == 0 else f'train.process_{jax.process_index()}.log'
  with workdir_lock.hold(workdir), console.log_file(os.path.join(workdir, log)):
    return _train(config, workdir)


def _train(config, workdir: str):
  """train_and_evaluate's loop, run while this process holds the workdir."""
  num_devices = jax.device_count()
  manager = checkpoints.create_manager(workdir, config.keep_checkpoints)
  if manager.latest_step() is not None and checkpoints.has_config(workdir):
    config_checks.check_resumable(configuration.load(workdir), config, workdir)
  checkpoints.save_config(config, workdir)
  generators = families.get(config).create_generators(config.model)

  batches, samples, data_description = open_training_data(config)
  image_size = training_image_size(config, batches)
  schedule = state_lib.learning_rate_schedule(config.train, batches.steps_per_epoch)
  total_steps = sum(state_lib.schedule_steps(config.train, batches.steps_per_epoch))
  first = jax.process_index() == 0
  status = lambda text: console.status(text, first)
  status(f'Data: {data_description}, {batches.steps_per_epoch} steps per epoch, {total_steps} '
         'steps in all.')

  mesh = jax.make_mesh((num_devices,), ('data',))
  state = state_lib.create_sharded_state(config, image_size, mesh, schedule)
  counts = '; '.join(f'{name}: {models.count_params(getattr(state, name).params):,} parameters'
                     for name in state_lib.network_names(state))
  logging.info('%s', counts)
  if first:
    print(counts, flush=True)

  state = checkpoints.restore_latest(manager, workdir, state)
  start_step = int(state.step)
  if start_step:
    status(f'Resuming from the checkpoint at step {start_step}.')

  train_step = train_step_lib.make_train_step(config, mesh, state, schedule)
  batch_sharding = jax.NamedSharding(mesh, jax.P('data'))

  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() != 0)
  report_progress = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer)
  hooks = [report_progress] if jax.process_index() == 0 else []
  if config.profile_steps > 0 and jax.process_index() == 0:
    hooks.append(periodic_actions.Profile(
        logdir=workdir, num_profile_steps=config.profile_steps, profile_duration_ms=None,
        first_profile=PROFILE_FIRST_STEP, every_secs=None))

  # FID/KID during training: the Inception weights and the real test images'
  # features are loaded once, before the first step, so a bad path fails now.
  evaluator = evaluate.Evaluator(config, generators) if config.eval.every_steps > 0 else None

  data = batches.iterate(start_step, config.data.num_workers)
  compiled_step = None
  buffered_metrics = []
  previous = None  # (step count, metrics) of the step before, checked while this one runs.
  last_log = (start_step, time.time())
  with _StopSignals() as signals, console.Progress(start_step, total_steps, first) as progress:
    for step in range(start_step, total_steps):
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        local = next(data)
        if local['A'].shape[1:3] != image_size or local['B'].shape[1:3] != image_size:
          raise ValueError(f'step {step}: images of {local["A"].shape[1:3]}/'
                           f'{local["B"].shape[1:3]} after preprocessing, but training started '
                           f'with {image_size}; config.data.preprocess='
                           f'{config.data.preprocess!r} needs images of one size')
        batch = {k: jax.make_array_from_process_local_data(batch_sharding, v)
                 for k, v in local.items()}
        if compiled_step is None:  # Compiled once, and refused if it cannot fit.
          compiled_step = train_step.lower(state, batch).compile()
          memory.check_fits(compiled_step, *_step_memory_message(config, image_size))
        state, metrics = compiled_step(state, batch)
        buffered_metrics.append(metrics)
      done = step + 1
      # A NaN stops training at once. Checking the previous step's losses
      # while this step runs keeps the device busy.
      if previous is not None:
        _check_finite(*previous, manager)
      previous = (done, metrics)
      for hook in hooks:
        hook(done)
      progress.update(done)
      stop = signals.stop_now(done, config.log_every_steps)
      is_last = done == total_steps or stop

      if done % config.log_every_steps == 0 or is_last:
        summary = jax.tree.map(lambda *x: float(np.mean(x)), *jax.device_get(buffered_metrics))
        elapsed_steps, elapsed_time = done - last_log[0], time.time() - last_log[1]
        summary['steps_per_sec'] = elapsed_steps / elapsed_time
        writer.write_scalars(done, summary)
        progress.line(console.metrics_line(done, total_steps, summary))
        buffered_metrics, last_log = [], (done, time.time())

      if done % config.sample_every_steps == 0 or is_last:
        with report_progress.timed('sample'):
          grid = sample_grid(generators, state, samples, config)
          writer.write_images(done, {'samples': grid[None]})
          if jax.process_index() == 0:
            path = os.path.join(workdir, 'samples', f'step_{done:08d}.png')
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(grid).save(path)
            progress.line(f'step {done}: samples {path}')

      # Not after a stop signal: a preemption's grace period goes to the checkpoint.
      if evaluator and not stop and (done % config.eval.every_steps == 0 or is_last):
        with report_progress.timed('eval'):
          results = evaluator({name: getattr(state, name).params for name in evaluator.networks})
          writer.write_scalars(done, evaluate.scalars(results))
          if jax.process_index() == 0:
            evaluate.write_json(workdir, {'step': done, **results})
            best = record_best(workdir, done, results)
            for line in evaluate.summary_lines(done, results):
              progress.bar.write(line)
            progress.bar.write('best FID so far: ' + ', '.join(
                f'{d} {b["fid"]:.4f} at step {b["step"]}' for d, b in best.items()))

      if done % config.checkpoint_every_steps == 0 or is_last:
        _check_finite(done, metrics, manager)  # Never save a NaN state.
        with report_progress.timed('checkpoint'):
          checkpoints.save(manager, state)
        progress.line(f'step {done}: checkpoint {checkpoints.step_dir(workdir, done)}')

      if stop:
        message = (f'Stopped by {signals.received or "another process"} after step {done} '
                   f'and saved a checkpoint there; run the same command to resume.')
        progress.close()
        logging.warning(message)
        print(message, flush=True)
        break

  checkpoints.wait_until_finished(manager)
  writer.flush()
  return state
