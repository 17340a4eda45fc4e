"""train_and_evaluate(config, workdir): the training loop. Reads no flags."""

import collections
import json
import os
import signal
import sys
import threading
import time

from absl import logging
from clu import metric_writers
from clu import periodic_actions
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from cyclegan_jax import checkpoints
from cyclegan_jax import config_checks
from cyclegan_jax import configuration
from cyclegan_jax import console
from cyclegan_jax import deterministic_ops
from cyclegan_jax import curves
from cyclegan_jax import evaluate
from cyclegan_jax import families
from cyclegan_jax import image_io
from cyclegan_jax import memory
from cyclegan_jax import models
from cyclegan_jax import quickstart_check
from cyclegan_jax import report
from cyclegan_jax.data import input_pipeline
from cyclegan_jax import state as state_lib
from cyclegan_jax import storage
from cyclegan_jax import sweeps
from cyclegan_jax import train_step as train_step_lib
from cyclegan_jax import workdir_lock


PROFILE_FIRST_STEP = 10  # Past compilation and the first warm-up steps.
# At most this often a log step copies a gs:// workdir's log and TensorBoard
# events up (whole files: objects cannot be appended to), as TensorFlow's
# writers flush every 120 s.
MIRROR_SECONDS = 120
# Batches sent to the devices ahead of the step that uses them, so that the
# transfer of the next batch overlaps the running step.
PREFETCH_BATCHES = 2


def training_image_size(config, batches) -> tuple[int, int]:
  """(H, W) of every training image."""
  if config.data.preprocess in ('resize_and_crop', 'crop', 'scale_width_and_crop'):
    return (config.data.crop_size, config.data.crop_size)
  return batches.batch(0)['A'].shape[1:3]  # Sizes that follow the data.


def open_training_data(config, shard_of=None):
  """(training batches, test images for the sample grids, a line describing
  the data) of config.model.kind (families: paired or unpaired). `shard_of`:
  (process index, count) of the processes sharing each batch (default: all)."""
  shard_of = shard_of or (jax.process_index(), jax.process_count())
  shard = (config.seed, config.train.batch_size, *shard_of)
  family = families.get(config)
  return family.open_training_data(config, shard, family.domain_channels(config))


class Runs:
  """What one program trains: R runs (one, or a sweep's) on a (`runs`,
  `data`) mesh, the state, batches and metrics with a leading runs axis.

  One run writes its outputs to the workdir, and its checkpoints hold its
  state without the runs axis (as they always have); a sweep's runs write to
  W/runs/<name>/ (docs/sweeps.md), each trained on the devices of one mesh
  row, in one process: that process reads its data and writes its samples
  and evaluations."""

  def __init__(self, config, workdir: str):
    self.sweep = sweeps.runs(config)
    self.configs = [sweeps.run_config(config, run) for run in self.sweep] or [config]
    self.names = [run.name for run in self.sweep] or ['']
    self.folders = [os.path.join(workdir, run.folder) for run in self.sweep] or [workdir]
    self.mesh = jax.make_mesh(sweeps.mesh_shape(len(self), jax.device_count()), ('runs', 'data'))
    self.place(self.mesh)

  def place(self, mesh) -> None:
    """Notes which processes hold each run (those of its mesh row's devices)
    and which writes its outputs (that of the row's first device)."""
    per_row = len(self) // mesh.shape['runs']
    rows = [mesh.devices[i // per_row] for i in range(len(self))]
    self.owners = [row[0].process_index for row in rows]
    # Each run's devices in this process, which evaluate it.
    self.local_devices = [tuple(d for d in row if d.process_index == jax.process_index())
                          for row in rows]
    self.local = [i for i, devices in enumerate(self.local_devices) if devices]

  def __len__(self) -> int:
    return len(self.configs)

  @property
  def data_shard(self):
    """open_training_data's shard_of: a sweep's runs each read all of a
    batch in one process; one run's batch is shared by every process."""
    return (0, 1) if self.sweep else None

  def batches_of_runs(self, batches, config) -> list:
    """This process's runs' training batches: a sweep's decoded once for
    all, each run with its own order, crops and flips."""
    if not self.sweep:
      return [batches]
    return batches.for_seeds([self.configs[i].seed for i in self.local],
                             config.data.decoded_cache_mb)

  def describe(self) -> list[str]:
    """Lines on how a sweep's runs share the devices (none for one run)."""
    if not self.sweep:
      return []
    return [f'Sweep of {len(self)} runs, {self.mesh.shape["runs"]} at a time side by side, each '
            f'on {self.mesh.shape["data"]} device(s): ' + '; '.join(
                f'{run.index}: {run.name}' for run in self.sweep)]

  def params(self, state, i: int, names) -> dict:
    """{network: run i's parameters} of the networks `names`, on the devices:
    sliced from the run's row on a device of this process that holds it
    (the parameters are whole on each device of the row), never the whole
    state through the host."""
    return {name: jax.tree.map(lambda x: _run_row(x, i), getattr(state, name).params)
            for name in names}

  def step(self, state) -> int:
    """The step count (every run of a sweep is at the same step)."""
    return int(np.asarray(_run_row(state.step, self.local[0])))

  def states(self, state) -> dict:
    """{run: its state on the host} of this process's runs, each assembled
    from the shards of its row of devices."""
    return {i: jax.tree.map(lambda x, i=i: _run_slice(x, i), state) for i in self.local}

  def batch(self, per_run: list, image_size) -> dict:
    """The global batch, {domain: (runs, batch, H, W, C) array}, from this
    process's runs' host batches (`per_run`, in the order of `local`; of one
    run over several processes, this process's share of its batch)."""
    sharding = jax.NamedSharding(self.mesh, jax.P('runs', 'data'))
    batch = {}
    for k, v in per_run[0].items():
      global_shape = (len(self), self.configs[0].train.batch_size, *v.shape[1:])
      batch[k] = jax.make_array_from_process_local_data(
          sharding, np.stack([b[k] for b in per_run]), global_shape)
    return batch

  def on_host(self, metrics):
    """Metrics ({name: (runs,) array}, of every run, gathered from every
    process) as numpy."""
    if jax.process_count() > 1:
      return multihost_utils.process_allgather(metrics, tiled=True)
    return jax.device_get(metrics)

  def values(self, metrics: dict, i: int) -> dict:
    """Run i's metrics (on_host), as floats."""
    return {k: float(np.asarray(v)[i]) for k, v in metrics.items()}

  def label(self, i: int) -> str:
    return f'{self.names[i]}: ' if self.sweep else ''

  def saved(self, state):
    """The state as checkpoints hold it: one run's without the runs axis
    (`state` donated), a sweep's as it is."""
    return state if self.sweep else state_lib.without_runs_axis(state, self.mesh)

  def trained(self, saved):
    """`saved` undone: the state as training holds it (`saved` donated)."""
    return saved if self.sweep else state_lib.with_runs_axis(saved, self.mesh)

  def save(self, manager, state, step: int):
    """Saves a checkpoint of `state` (donated); returns the state to train on."""
    saved = self.saved(state)
    checkpoints.save(manager, saved, step)  # The arrays are off the devices when it returns.
    return self.trained(saved)

  def restore(self, manager, workdir: str, state, relay):
    """The newest checkpoint (checkpoints.restore_latest) restored into the
    fresh `state` (donated), or that state; the optimisers' hyperparameters
    are always the config's."""
    target = self.saved(state)
    restored = checkpoints.restore_latest(manager, workdir, target, relay)
    if restored is not target:
      restored = state_lib.hyperparameters_of(target, restored)
    del target
    return self.trained(restored)

  def write_summary(self, workdir: str, step: int, metrics, progress) -> None:
    """A sweep's W/sweep.json and table in the log, at a checkpoint (every
    process calls it: the losses are gathered from all); nothing for one run."""
    if not self.sweep:
      return
    losses = self.on_host(metrics)
    if jax.process_count() > 1:  # Every run's eval/ is written.
      multihost_utils.sync_global_devices(f'sweep summary {step}')
    if jax.process_index() == 0:
      _write_sweep_summary(workdir, self, step, losses, progress)


def _run_row(x: jax.Array, i: int) -> jax.Array:
  """Row i of a global array sharded over runs first and whole on each of a
  row's devices (parameters, the step), sliced on a device of this process."""
  for shard in x.addressable_shards:
    start, stop, _ = shard.index[0].indices(x.shape[0])
    if start <= i < stop:
      assert shard.data.shape[1:] == x.shape[1:], 'sharded beyond the runs axis'
      return shard.data[i - start]
  raise ValueError(f'run {i} is not held by process {jax.process_index()}')


def _run_slice(x: jax.Array, i: int) -> np.ndarray:
  """Row i of a global array sharded over runs first, from this process's shards."""
  out = np.empty(x.shape[1:], x.dtype)
  for shard in x.addressable_shards:
    start, stop, _ = shard.index[0].indices(x.shape[0])
    if start <= i < stop:
      out[shard.index[1:]] = np.asarray(shard.data)[i - start]
  return out


def sample_grid(generators, params, samples, config) -> np.ndarray:
  """The family's rows (CycleGAN: real | translated | reconstructed, for the A
  then the B images; pix2pix: input | output | target), one image per
  forward pass, as 8-bit RGB for viewing whatever the models' channels."""
  rows = families.get(config).sample_rows(generators, params, samples, config)
  return input_pipeline.to_uint8(np.concatenate(rows, axis=0))


def record_best(workdir: str, step: int, metrics: dict) -> dict:
  """Updates workdir/eval/best.json, {direction: {'step', 'fid'}}: the step of
  the lowest FID so far in each direction, across resumed runs too."""
  path = storage.join(workdir, 'eval', 'best.json')
  best = {}
  if storage.isfile(path):
    best = json.loads(storage.read_text(path))
  for direction, values in metrics.items():
    if direction == 'protocol':
      continue
    if direction not in best or values['fid'] < best[direction]['fid']:
      best[direction] = {'step': step, 'fid': values['fid']}
  storage.makedirs(os.path.dirname(path))  # Called by the process that owns the run.
  storage.write_text_atomically(path, json.dumps(best, indent=2))
  return best


class NonFiniteLossError(FloatingPointError):
  """A loss became NaN or infinite; the state of that step was not saved."""


def _check_finite(done: int, values, manager, runs: Runs) -> None:
  """Raises NonFiniteLossError if a loss in `values` (on the host: the sums
  or means of the steps since the last check) is not finite."""
  bad = [(i, k, runs.values(values, i)[k]) for i in range(len(runs)) for k in values
         if not np.isfinite(runs.values(values, i)[k])]
  if bad:
    checkpoints.wait_until_finished(manager)  # The checkpoints under way complete.
    run, name, value = bad[0]
    names = sorted({k for i, k, _ in bad if i == run})
    raise NonFiniteLossError(
        f'step {done}: {runs.label(run)}loss {name} is {value} (non-finite: {", ".join(names)}); '
        'stopped without '
        f'saving this state. The newest checkpoint is step {manager.latest_step()}: lower '
        'config.train.lr, or check the data, then run again (it resumes from there)')


# The running sum of the steps' metrics, on the device: the loop fetches it
# only when it logs (or checks it before a checkpoint), so nothing waits for
# a step to finish before the next is queued.
add_metrics = jax.jit(lambda total, metrics: jax.tree.map(jnp.add, total, metrics))


def prefetched(host_batches, to_device, ahead: int = PREFETCH_BATCHES):
  """to_device(batch) of each host batch, `ahead` batches before the step
  that takes it. An error in making a batch is raised at that batch's own
  turn, as it would be without prefetching."""
  queue = collections.deque()

  def send():
    try:
      queue.append(to_device(next(host_batches)))
    except StopIteration:  # The last step's batch is on its way.
      pass
    except Exception as error:  # pylint: disable=broad-exception-caught
      queue.append(error)

  for _ in range(ahead):
    send()
  while True:
    send()
    item = queue.popleft()
    if isinstance(item, Exception):
      raise item
    yield item


def _runs_that_fit(compiled, runs, mesh) -> int | None:
  """About how many runs of a sweep the memory holds: the program's need
  beyond its arguments scaled by runs per device (None when unknown)."""
  needed, available = memory.compiled_memory_bytes(compiled, False), memory.available_bytes()
  if not needed or available is None:
    return None
  per_device = len(runs) // mesh.shape['runs']
  return int(available // (needed / per_device)) * mesh.shape['runs']


def _step_memory_message(config, image_size, runs, fit=None) -> tuple[str, str]:
  """(what, advice) for memory.check_fits of the train step."""
  h, w = image_size
  what = f'a train step of {config.train.batch_size} {w}x{h} images'
  options = ['lower config.data.crop_size or config.train.batch_size']
  if runs.sweep:
    what += f' for each of {len(runs)} runs'
    about = f'about {fit} would fit' if fit else 'not even one fits'
    options.insert(0, f'sweep fewer runs ({about}) or use more devices')
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
  workdir = storage.absolute(workdir)
  num_devices = jax.device_count()
  logging.info('Process %d of %d, %d of %d devices here: %s.', jax.process_index(),
               jax.process_count(), jax.local_device_count(), num_devices,
               jax.devices()[0].device_kind)
  config_checks.validate(config, num_devices, jax.process_count())
  caution = deterministic_ops.warning(config.deterministic, jax.default_backend())
  if caution and jax.process_index() == 0:
    print(f'warning: {caution}', file=sys.stderr, flush=True)
  checkpoints.prepare_workdir(workdir)
  # Before anything is written: a second trainer on this workdir stops here.
  log = 'train.log' if jax.process_index() == 0 else f'train.process_{jax.process_index()}.log'
  with workdir_lock.hold(workdir):
    # What libraries write only as local files (the log, TensorBoard events,
    # profiles) goes into a local mirror of a gs:// workdir, copied up at log
    # steps (every MIRROR_SECONDS at most), evaluations, checkpoints and the
    # end; a local workdir is its own mirror.
    mirror = storage.Mirror(workdir, keep=(log,))
    try:
      with console.log_file(os.path.join(mirror.local, log)):
        return _train(config, workdir, mirror)
    finally:
      mirror.close()


def _train(config, workdir: str, mirror: storage.Mirror):
  """train_and_evaluate's loop, run while this process holds the workdir:
  setup, restore, then the steps, each followed by the hooks that are due
  (log, samples, evaluation, checkpoint: _Hooks)."""
  logging.info('XLA_FLAGS=%r', os.environ.get('XLA_FLAGS', ''))
  manager = checkpoints.create_manager(workdir, config.keep_checkpoints)
  if manager.latest_step() is not None and checkpoints.has_config(workdir):
    config_checks.check_resumable(configuration.load(workdir), config, workdir)
  checkpoints.save_config(config, workdir)
  runs = Runs(config, workdir)
  status = lambda text: console.status(text, jax.process_index() == 0)

  batches, samples, data_description = open_training_data(
      runs.configs[runs.local[0]], runs.data_shard)
  image_size = training_image_size(config, batches)
  total_steps = sum(state_lib.schedule_steps(config.train, batches.steps_per_epoch))
  status(f'Data: {data_description}, {batches.steps_per_epoch} steps per epoch, {total_steps} '
         'steps in all.')
  for line in runs.describe():
    status(line)
  state = state_lib.create_sharded_state(runs.configs, image_size, runs.mesh,
                                         batches.steps_per_epoch)
  _print_parameter_counts(runs, state)

  def relay(restored, state):  # A checkpoint written on another device count.
    state, line = state_lib.relay_per_device(restored, state)
    if line:
      status(line)
    return state

  state = runs.restore(manager, workdir, state, relay)
  start_step = runs.step(state)
  if start_step:
    status(f'Resuming from the checkpoint at step {start_step}.')
  if jax.process_index() == 0:  # The software of this start, for the report.
    report.record_versions(workdir, start_step)
  train_step = train_step_lib.make_train_step(config, runs.mesh, state, batches.steps_per_epoch)
  values = train_step_lib.sweep_values(config, runs.mesh)  # {} for one run.
  hooks = _Hooks(config, workdir, mirror, runs, manager, samples, total_steps)

  def to_device(item):  # (step, each local run's host batch) -> the global batch.
    step, per_run = item
    _check_image_size(step, per_run[0], image_size, config)
    return runs.batch(per_run, image_size)

  iterators = [b.iterate(start_step, config.data.num_workers)
               for b in runs.batches_of_runs(batches, config)]
  device_batches = prefetched(((step, [next(data) for data in iterators])
                               for step in range(start_step, total_steps)), to_device)
  compiled_step = None
  with _StopSignals() as signals, console.Progress(start_step, total_steps,
                                                   jax.process_index() == 0) as progress:
    hooks.start(start_step, progress)
    for step in range(start_step, total_steps):
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        batch = next(device_batches)
        if compiled_step is None:  # Compiled once, and refused if it cannot fit.
          compiled_step = _compile(train_step, (state, batch, values), config, image_size, runs)
        state, metrics = compiled_step(state, batch, values)
        hooks.add(metrics)
      done = step + 1
      hooks.stepped(done)
      stop = signals.stop_now(done, config.log_every_steps)
      due = lambda every, done=done, stop=stop: done % every == 0 or done == total_steps or stop
      if due(config.log_every_steps):
        hooks.log(done)
      if due(config.sample_every_steps):
        hooks.samples(state, done)
      # Not after a stop signal: a preemption's grace period goes to the checkpoint.
      if hooks.evaluator and not stop and due(config.eval.every_steps):
        hooks.evaluate(state, done)
      if due(config.checkpoint_every_steps):
        state = hooks.checkpoint(state, metrics, done)
      if stop:
        hooks.stopped(done, signals.received)
        break
  hooks.close()
  if (config.data.builtin and runs.step(state) == total_steps and jax.process_index() == 0
      and jax.process_count() == 1):
    _print_known_grade(workdir, runs)
  return runs.saved(state)


def _print_known_grade(workdir: str, runs: Runs) -> None:
  """The last lines of a finished run on the quick start's data: how far its
  translations are from the grade the data was made with, against doing
  nothing (quickstart_check), so a newcomer sees whether it learned."""
  for run in runs.sweep or [None]:
    for line in quickstart_check.summary_lines(workdir, run=run and run.name):
      print((f'{run.name}: ' if run else '') + line, flush=True)


def _print_parameter_counts(runs: Runs, state) -> None:
  one_run = runs.params(state, runs.local[0], state_lib.network_names(state))
  counts = '; '.join(f'{name}: {models.count_params(params):,} parameters'
                     for name, params in one_run.items())
  logging.info('%s', counts)
  if jax.process_index() == 0:
    print(counts + (' (each run)' if runs.sweep else ''), flush=True)


def _check_image_size(step: int, batch: dict, image_size, config) -> None:
  if batch['A'].shape[1:3] != image_size or batch['B'].shape[1:3] != image_size:
    raise ValueError(f'step {step}: images of {batch["A"].shape[1:3]}/'
                     f'{batch["B"].shape[1:3]} after preprocessing, but training started '
                     f'with {image_size}; config.data.preprocess='
                     f'{config.data.preprocess!r} needs images of one size')


def _compile(train_step, args, config, image_size, runs: Runs):
  """The step compiled for `args`, refused in one line if it cannot fit."""
  compiled = train_step.lower(*args).compile()
  fit = _runs_that_fit(compiled, runs, runs.mesh)
  memory.check_fits(compiled, *_step_memory_message(config, image_size, runs, fit))
  return compiled


class _Hooks:
  """What the loop does after a step when it is due: log the losses,
  write sample grids, evaluate, save a checkpoint; and the writers, progress
  and profiling they share."""

  def __init__(self, config, workdir, mirror, runs: Runs, manager, samples, total_steps):
    self.config, self.workdir, self.mirror, self.runs = config, workdir, mirror, runs
    self.manager, self.samples_images, self.total_steps = manager, samples, total_steps
    self.first = jax.process_index() == 0
    self.generators = families.get(config).create_generators(config.model)
    self.writer = metric_writers.create_default_writer(mirror.local, just_logging=not self.first)
    # A sweep's runs each write their own scalars and images (TensorBoard
    # overlays them), each by the process that holds the run.
    local = lambda folder: os.path.join(mirror.local, os.path.relpath(folder, workdir))
    self.run_writers = [
        self.writer if folder == workdir else metric_writers.create_default_writer(
            local(folder), just_logging=owner != jax.process_index())
        for folder, owner in zip(runs.folders, runs.owners)]
    self.report_progress = periodic_actions.ReportProgress(num_train_steps=total_steps,
                                                           writer=self.writer)
    self.periodic = [self.report_progress] if self.first else []
    if config.profile_steps > 0 and self.first:
      self.periodic.append(periodic_actions.Profile(
          logdir=mirror.local, num_profile_steps=config.profile_steps, profile_duration_ms=None,
          first_profile=PROFILE_FIRST_STEP, every_secs=None))
    # FID/KID during training: the Inception weights and the real test images'
    # features are loaded once, before the first step, so a bad path fails now.
    self.evaluator = (evaluate.Evaluator(config, self.generators)
                      if config.eval.every_steps > 0 else None)
    self.metric_sums, self.summed_steps = None, 0  # On the device, since the last log.
    self.last_sync = time.time()

  def start(self, start_step: int, progress) -> None:
    self.progress, self.last_log = progress, (start_step, time.time())

  def add(self, metrics) -> None:
    """Adds a step's metrics to the sums kept on the device."""
    self.metric_sums = metrics if self.metric_sums is None else add_metrics(self.metric_sums,
                                                                            metrics)
    self.summed_steps += 1

  def stepped(self, done: int) -> None:
    for action in self.periodic:
      action(done)
    self.progress.update(done)

  def log(self, done: int) -> None:
    """The mean losses since the last log, per run; a NaN stops training here."""
    runs = self.runs
    mean = {k: v / self.summed_steps for k, v in runs.on_host(self.metric_sums).items()}
    _check_finite(done, mean, self.manager, runs)
    self.metric_sums, self.summed_steps = None, 0
    steps_per_sec = (done - self.last_log[0]) / (time.time() - self.last_log[1])
    for i, run_writer in enumerate(self.run_writers):
      summary = {**runs.values(mean, i), 'steps_per_sec': steps_per_sec}
      run_writer.write_scalars(done, summary)
      self.progress.line(runs.label(i) + console.metrics_line(done, self.total_steps, summary))
    self.last_log = (done, time.time())
    if time.time() - self.last_sync >= MIRROR_SECONDS:
      self._sync()

  def samples(self, state, done: int) -> None:
    """Each local run's sample grid, to TensorBoard and W/samples/."""
    runs = self.runs
    with self.report_progress.timed('sample'):
      for i in runs.local:
        grid = sample_grid(self.generators, runs.params(state, i, self.generators),
                           self.samples_images, self.config)
        self.run_writers[i].write_images(done, {'samples': grid[None]})
        if jax.process_index() == runs.owners[i]:
          path = storage.join(runs.folders[i], 'samples', f'step_{done:08d}.png')
          storage.makedirs(os.path.dirname(path))
          image_io.write_png_atomically(path, grid)
          self.progress.line(f'step {done}: {runs.label(i)}samples {path}')
          if not self.first:
            logging.info('step %d: %ssamples %s', done, runs.label(i), path)

  def evaluate(self, state, done: int) -> None:
    """FID/KID of each local run, its eval/ files, best so far and plot."""
    runs = self.runs
    with self.report_progress.timed('eval'):
      for i in runs.local:
        results = self.evaluator(runs.params(state, i, self.evaluator.networks),
                                 runs.local_devices[i])
        self.run_writers[i].write_scalars(done, evaluate.scalars(results))
        if jax.process_index() == runs.owners[i]:
          evaluate.write_json(runs.folders[i], {'step': done, **results})
          best = record_best(runs.folders[i], done, results)
          for line in evaluate.summary_lines(done, results):
            self.progress.bar.write(runs.label(i) + line)
          self.progress.bar.write(runs.label(i) + 'best FID so far: ' + ', '.join(
              f'{d} {b["fid"]:.4f} at step {b["step"]}' for d, b in best.items()))
          self.run_writers[i].flush()  # The losses so far, for the plot.
          self.mirror.sync()
          curves.write_plot(runs.folders[i],
                            title=runs.names[i] or os.path.basename(self.workdir))

  def checkpoint(self, state, metrics, done: int):
    """Saves the state (donated; returns the state to train on), never a
    NaN one (the steps since the last log are checked first), and a sweep's
    summary."""
    if self.metric_sums is not None:
      _check_finite(done, self.runs.on_host(self.metric_sums), self.manager, self.runs)
    with self.report_progress.timed('checkpoint'):
      state = self.runs.save(self.manager, state, done)
    self.progress.line(f'step {done}: checkpoint {checkpoints.step_dir(self.workdir, done)}')
    self.runs.write_summary(self.workdir, done, metrics, self.progress)
    self._sync()
    return state

  def stopped(self, done: int, signal_name) -> None:
    message = (f'Stopped by {signal_name or "another process"} after step {done} '
               f'and saved a checkpoint there; run the same command to resume.')
    self.progress.close()
    logging.warning(message)
    print(message, flush=True)

  def _sync(self) -> None:
    """Flushes the writers and copies a gs:// workdir's local files up."""
    for run_writer in self.run_writers:
      run_writer.flush()
    self.mirror.sync()
    self.last_sync = time.time()

  def close(self) -> None:
    checkpoints.wait_until_finished(self.manager)
    for writer in {id(w): w for w in [self.writer, *self.run_writers]}.values():
      writer.flush()


def _write_sweep_summary(workdir: str, runs: Runs, step: int, metrics, progress) -> None:
  """W/sweep.json and a table in the log: per run its values, last losses and
  (with evaluation) final and best FID/KID; per group of runs that differ
  only in their seed, mean ± std."""
  per_run = []
  for i, run in enumerate(runs.sweep):
    folder = runs.folders[i]
    per_run.append({
        'index': run.index, 'name': run.name, 'values': run.values, 'folder': run.folder,
        'step': step, 'losses': runs.values(metrics, i),
        'final': evaluate.latest_scores(folder), 'best': evaluate.best_scores(folder)})
  summary = sweeps.summary(per_run)
  storage.write_text_atomically(storage.join(workdir, sweeps.SUMMARY_FILE),
                                    json.dumps(summary, indent=2))
  for line in sweeps.summary_table(summary):
    progress.line(line)
