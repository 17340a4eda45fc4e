"""Orbax checkpoints of the whole train state, and the config beside them.

Every checkpoint records the format of the state it holds (FORMAT). Reading
one, newest checkpoint first, goes through: a quiet read of all its stored
files, its format (this code's, or a one-line refusal), its array names and
shapes against the state being restored (or a one-line refusal), and Orbax's
restore. A checkpoint whose files cannot be read is damaged: it is named in a
warning and the next older one is tried; training moves it aside to
W/checkpoints_damaged/ (never deletes it), so that later saves and
`keep_checkpoints` pruning deal with intact checkpoints only."""

import importlib.metadata
import logging
import os
import re
import sys

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import tensorstore as ts

from cyclegan_jax import storage

CONFIG_FILE = 'config.json'
DAMAGED_DIR = 'checkpoints_damaged'

# The layout of the saved train state. A change to the state's fields, or to
# what an array means, bumps it, and comes with a converter or a refusal in
# _check_format (and renewed fixtures: tests/fixtures/make_fixtures.py).
# Checkpoints from before formats were recorded are format 1.
#   1: each network's optimiser state is optax.adam's own.
#   2: it is wrapped by optax.inject_hyperparams (a sweep's runs' differing
#      learning rates and Adam betas in its state); format 1 is read as the
#      wrapped state.
FORMAT = 2
READS = (1, 2)


class CheckpointError(ValueError):
  """A checkpoint that cannot be used, explained in one line."""


def checkpoint_dir(workdir: str) -> str:
  return storage.join(storage.absolute(workdir), 'checkpoints')


def step_dir(workdir: str, step: int) -> str:
  return storage.join(checkpoint_dir(workdir), str(step))


def create_manager(workdir: str, keep: int = 3) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep or None, create=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_handlers=ocp.StandardCheckpointHandler())


def _reading_manager(workdir: str) -> ocp.CheckpointManager:
  """A manager that reads and never creates or prunes anything. Its handler
  is the PyTree one under StandardCheckpointHandler (the same files), which
  restores part of a checkpoint and each array in the reader's own sharding
  or as numpy: whatever the devices and processes that wrote it."""
  options = ocp.CheckpointManagerOptions(create=False, read_only=True, save_interval_steps=0)
  # Orbax warns that the directory is read only, which is the point here.
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                                 item_handlers=ocp.PyTreeCheckpointHandler())
  finally:
    absl_logger.setLevel(level)


def _version() -> str:
  try:
    return importlib.metadata.version('cyclegan_jax')
  except importlib.metadata.PackageNotFoundError:
    return 'unknown'


def prepare_workdir(workdir: str) -> None:
  """Creates the workdir and checks that this process can write there, before
  anything is loaded or compiled."""
  probe = storage.join(workdir, f'.write_test_{jax.process_index()}')
  try:
    storage.makedirs(workdir)
    storage.write_text_atomically(probe, 'ok')
    storage.remove(probe)
  except Exception as e:  # pylint: disable=broad-except  # OSError, or a store's own errors.
    reason = getattr(e, 'strerror', None) or (str(e).splitlines() or [type(e).__name__])[0][:200]
    raise OSError(f'{workdir}: cannot write to this workdir ({reason}); '
                  'expected a folder this process can create and write to') from None


def _write_error(manager: ocp.CheckpointManager, error: Exception) -> OSError:
  text = str(error)
  code = re.search(r"os_error_code='(\d+)'", text)  # TensorStore's way of saying ENOSPC etc.
  reason = os.strerror(int(code.group(1))) if code else (text.splitlines() or [''])[0][:200]
  newest = manager.latest_step()
  newest = f'step {newest}' if newest is not None else 'none yet'
  return OSError(
      f'{manager.directory}: could not write a checkpoint ({reason}); the newest complete '
      f'checkpoint is {newest}. Free some space (or fix the permissions) and run the same '
      'command again to resume from there')


def save(manager: ocp.CheckpointManager, state, step: int | None = None,
         fmt: int = FORMAT) -> None:
  """Saves asynchronously: the arrays are copied off the devices before this
  returns, so the caller may donate `state` to the next step right away.
  `fmt`: the format `state` is in (another only for a state read as stored,
  e.g. a run extracted from a sweep).

  Orbax writes into a temporary folder and renames it when complete, so a
  failed or killed save never looks like a checkpoint."""
  step = int(state.step) if step is None else step  # A sweep's state has a step per run.
  try:
    manager.save(step, args=ocp.args.StandardSave(state),
                 custom_metadata={'format': fmt, 'written_by': f'cyclegan_jax {_version()}'})
  except Exception as e:  # pylint: disable=broad-except  # Also an earlier async save's.
    raise _write_error(manager, e) from e


def wait_until_finished(manager: ocp.CheckpointManager) -> None:
  try:
    manager.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except
    raise _write_error(manager, e) from e


def _first_line(error: Exception) -> str:
  text = str(error).strip()
  return f'{type(error).__name__}: {(text.splitlines() or [""])[0][:160]}'


def _check_format(manager: ocp.CheckpointManager, step: int) -> None:
  """Refuses, in one line, a checkpoint of a format this code cannot read."""
  custom = manager.metadata(step).custom_metadata or {}
  found = int(custom.get('format', 1))
  if found in READS:
    return
  by = custom.get('written_by', 'another version')
  where = storage.join(str(manager.directory), str(step))
  advice = ('upgrade cyclegan_jax to read it' if found > FORMAT else
            'no converter from it exists; read it with the version that wrote it')
  raise CheckpointError(f'{where}: checkpoint format {found} (written by {by}), but '
                        f'cyclegan_jax {_version()} reads formats {", ".join(map(str, READS))}; '
                        f'{advice}, or use another --workdir')


def _format(manager: ocp.CheckpointManager, step: int) -> int:
  return int((manager.metadata(step).custom_metadata or {}).get('format', 1))


def is_optimizer_state(x) -> bool:
  """Whether `x` is a network's optimiser state (format 2's wrapper)."""
  return isinstance(x, optax.InjectStatefulHyperparamsState)


def _as_format_1(state):
  """`state` as format 1 held it: each optimiser state without its wrapper."""
  return jax.tree.map(lambda x: x.inner_state if is_optimizer_state(x) else x, state,
                      is_leaf=is_optimizer_state)


def _from_format_1(restored, target):
  """A state restored as _as_format_1(target) holds, with `target`'s
  optimiser wrappers around it: the hyperparameters (never saved in format
  1) from `target`, the count of updates from Adam's own."""
  def wrap(new, old):
    if not is_optimizer_state(new):
      return old
    counts = [x for path, x in jax.tree_util.tree_leaves_with_path(old)
              if _key_path(path).endswith('count')]
    # A copy: one buffer twice in a state could not be donated to the step.
    return new._replace(count=jax.numpy.array(counts[0], copy=True), inner_state=old)
  return jax.tree.map(wrap, target, restored, is_leaf=is_optimizer_state)


def _check_readable(directory: str) -> None:
  """Reads every stored value of the checkpoint in `directory`, synchronously.

  Orbax reads a checkpoint's arrays concurrently on an event loop; when one
  read fails, it closes the loop while others are still under way, and their
  late callbacks print dozens of tracebacks that no Python code can catch.
  Reading the OCDBT key-value stores here first finds truncated or missing
  data files quietly (a missing data file reads as an empty value, which no
  stored zarr chunk or metadata is)."""
  for manifest in storage.glob(directory, '*/manifest.ocdbt'):
    folder = os.path.dirname(manifest)
    base = f'{folder}/' if storage.is_remote(folder) else f'file://{folder}/'
    store = ts.KvStore.open({'driver': 'ocdbt', 'base': base}).result()
    keys = store.list().result()
    for start in range(0, len(keys), 64):  # A bounded amount in memory at once.
      reads = [(key, store.read(key)) for key in keys[start:start + 64]]
      for key, read in reads:
        result = read.result()
        if result.state != 'value' or not result.value:
          raise OSError(f'{key.decode(errors="replace")} has no stored data')


def _key_path(path) -> str:
  """'gen_ab/params/Conv_0/kernel' for a dataclass/dict/sequence path alike."""
  names = (getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k))) for k in path)
  return '/'.join(str(n) for n in names)


def _saved_metadata(manager: ocp.CheckpointManager, step: int):
  saved = manager.item_metadata(step)
  if saved is None:
    raise OSError('its array metadata cannot be read')
  return saved


def _per_device_axes(leaf) -> set[int]:
  """The axes of a target array laid out one entry per device of the `data`
  mesh axis (the history pools), from its sharding."""
  spec = getattr(getattr(leaf, 'sharding', None), 'spec', None) or ()
  return {i for i, names in enumerate(spec)
          if names == 'data' or (isinstance(names, tuple) and 'data' in names)}


def _differ_only_in(there: tuple, here: tuple, axes: set[int]) -> bool:
  return len(there) == len(here) and all(a == b or i in axes
                                         for i, (a, b) in enumerate(zip(there, here)))


def _whole_state_request(target, relay):
  """A request (below) for the whole state, in `target`'s structure and
  shardings (Orbax reshards every array written on other devices or
  processes). Arrays laid out per device (`target`'s sharding says which)
  saved for another device count are read as numpy at their saved shapes,
  and `relay(restored, target)` lays them out for this one; any other
  difference of names or shapes is refused in one line."""
  def request(manager, step):
    if _format(manager, step) == 1:
      args, finish = _request(manager, step, _as_format_1(target))
      return args, lambda restored: _from_format_1(finish(restored), target)
    return _request(manager, step, target)

  def _request(manager, step, target):
    saved = {_key_path(p): tuple(m.shape) for p, m in
             jax.tree_util.tree_flatten_with_path(_saved_metadata(manager, step))[0]}
    wanted = {_key_path(p): x for p, x in jax.tree_util.tree_flatten_with_path(target)[0]}
    relaid, differences = set(), []
    for key in sorted(saved.keys() | wanted.keys()):
      there = saved.get(key)
      here = tuple(np.shape(wanted[key])) if key in wanted else None
      if there == here:
        continue
      if (relay is not None and there is not None and here is not None
          and _differ_only_in(there, here, _per_device_axes(wanted[key]))):
        relaid.add(key)
        continue
      differences.append(f'{key}: {"missing" if there is None else there} there, '
                         f'{"missing" if here is None else here} now')
    if differences:
      where = storage.join(str(manager.directory), str(step))
      raise CheckpointError(
          f'{where}: holds a state of another layout ({"; ".join(differences[:3])}'
          f'{"; ..." if len(differences) > 3 else ""}); it was written with another model, '
          'image size or version (a fixed layout change comes with a new format); use the '
          'same setup, or another --workdir')

    def item(path, x):
      key = _key_path(path)
      return jax.ShapeDtypeStruct(saved[key], x.dtype) if key in relaid else x

    def restore_args(path, x):
      if _key_path(path) in relaid:
        return ocp.RestoreArgs(restore_type=np.ndarray)
      return ocp.ArrayRestoreArgs(sharding=x.sharding, global_shape=x.shape, dtype=x.dtype)

    args = ocp.args.PyTreeRestore(
        item=jax.tree_util.tree_map_with_path(item, target),
        restore_args=jax.tree_util.tree_map_with_path(restore_args, target))
    return args, (lambda restored: relay(restored, target)) if relaid else (lambda r: r)
  return request


def _params_request(networks: tuple[str, ...], workdir: str):
  """A request for the parameters of `networks` only, each array on this
  process's first device: no optimiser state, no pools, whatever devices
  and processes wrote them."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def request(manager, step):
    saved = _saved_metadata(manager, step)
    missing = [name for name in networks if name not in saved]
    if missing:
      raise CheckpointError(f'{step_dir(workdir, step)}: has no network {missing[0]} (it has '
                            f'{", ".join(sorted(saved.keys()))}); expected a checkpoint of '
                            'this model kind')
    item = {name: {'params': jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), saved[name]['params'])}
            for name in networks}
    restore_args = jax.tree.map(
        lambda s: ocp.ArrayRestoreArgs(sharding=s.sharding, global_shape=s.shape, dtype=s.dtype),
        item)
    args = ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True)
    return args, lambda restored: {name: restored[name]['params'] for name in networks}
  return request


def _numpy_request(manager, step):
  """A request for the whole saved state as nested dicts of numpy arrays."""
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                              _saved_metadata(manager, step))
  return ocp.args.PyTreeRestore(restore_args=restore_args), lambda restored: restored


def _all_agree(ok: bool) -> bool:
  """Whether every process could read (all read the same shared checkpoint)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def _restore_one(manager: ocp.CheckpointManager, step: int, request):
  """Step `step` restored as `request(manager, step)` -> (Orbax restore args,
  what to do with the result) asks. Raises OSError for damage: files that
  cannot be read in full, or metadata that cannot be read (the caller may
  try an older checkpoint); CheckpointError for a checkpoint that is intact
  but not of this format or layout, or that fails to restore (never taken
  for damage)."""
  error = None
  try:
    _check_readable(storage.join(str(manager.directory), str(step)))  # First: it is quiet.
    _check_format(manager, step)
    args, finish = request(manager, step)
  except CheckpointError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # Any read error means damage.
    error = e
  if not _all_agree(error is None):
    raise OSError(_first_line(error) if error else 'another process could not read it')
  try:
    return finish(manager.restore(step, args=args))
  except CheckpointError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    where = storage.join(str(manager.directory), str(step))
    raise CheckpointError(f'{where}: its files read in full, but restoring it failed '
                          f'({_first_line(e)}); it is left as it is: read it with the version '
                          'that wrote it, or use another --workdir') from e


def _warn(message: str) -> None:
  if jax.process_index() == 0:
    print(f'warning: {message}', file=sys.stderr, flush=True)


def _move_aside(workdir: str, step: int) -> str:
  """Moves a damaged checkpoint to W/checkpoints_damaged/<step>[.n]; returns where."""
  target = storage.join(storage.absolute(workdir), DAMAGED_DIR, str(step))
  n = 0
  while storage.exists(target + (f'.{n}' if n else '')):
    n += 1
  target += f'.{n}' if n else ''
  if jax.process_index() == 0:
    storage.makedirs(os.path.dirname(target))
    storage.move(step_dir(workdir, step), target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('cyclegan_jax: damaged checkpoint moved aside')
  return target


def _newest_readable(manager: ocp.CheckpointManager, workdir: str, request, step: int | None,
                     using: str):
  """(step, restored, damaged steps newer than it) of the newest checkpoint
  that restores, or of `step` alone when given."""
  if step is not None:
    if step not in manager.all_steps():
      found = ', '.join(map(str, manager.all_steps())) or 'none'
      raise FileNotFoundError(f'{checkpoint_dir(workdir)}: no checkpoint at step {step} '
                              f'(steps found: {found})')
    try:
      return step, _restore_one(manager, step, request), []
    except OSError as e:
      raise CheckpointError(f'{step_dir(workdir, step)}: cannot be read ({e}); choose '
                            'another --step') from None
  damaged = []
  for candidate in sorted(manager.all_steps(), reverse=True):
    try:
      restored = _restore_one(manager, candidate, request)
    except OSError as e:
      damaged.append((candidate, str(e)))
      continue
    for bad, reason in damaged:
      _warn(f'{step_dir(workdir, bad)}: cannot be read ({reason}); {using} step {candidate}')
    return candidate, restored, [bad for bad, _ in damaged]
  if damaged:
    found = '; '.join(f'step {s}: {reason}' for s, reason in damaged)
    raise CheckpointError(
        f'{checkpoint_dir(workdir)}: no checkpoint can be read ({found}); move the folder '
        'aside to start again, or use another --workdir')
  return None, None, []


def restore_latest(manager: ocp.CheckpointManager, workdir: str, state, relay=None):
  """The newest checkpoint that restores, restored into `state`'s structure and
  shardings, or `state` itself when there is none. Newer damaged checkpoints
  are named in a warning and moved aside to W/checkpoints_damaged/.

  Written on other devices or processes, its arrays are resharded to
  `state`'s; arrays laid out per device for another device count are read
  at their saved shapes and passed with `state` to `relay(restored, state)`,
  which returns the state to train on (without `relay`: refused)."""
  step, restored, damaged = _newest_readable(
      _reading_manager(workdir), workdir, _whole_state_request(state, relay), None,
      'resuming from')
  if damaged:
    for bad in damaged:
      where = _move_aside(workdir, bad)
      _warn(f'{step_dir(workdir, bad)}: moved to {where}, untouched')
    manager.reload()
  return state if step is None else restored


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes workdir/config.json atomically."""
  if jax.process_index() == 0:
    storage.write_text_atomically(storage.join(workdir, CONFIG_FILE),
                                  config.to_json_best_effort(indent=2))


def has_config(workdir: str) -> bool:
  return storage.isfile(storage.join(workdir, CONFIG_FILE))


def load_state(workdir: str, step: int | None = None):
  """(step, the whole saved state as nested dicts of numpy arrays) of a
  checkpoint (the newest readable one unless `step` is given). Reads only."""
  found, restored, _ = _newest_readable(_reading_manager(workdir), workdir, _numpy_request,
                                        step, 'using')
  if found is None:
    raise FileNotFoundError(f'{checkpoint_dir(workdir)}: no checkpoint')
  return found, restored


def saved_steps(workdir: str) -> list[int]:
  """The steps of the workdir's checkpoints, oldest first. Reads only."""
  return sorted(_reading_manager(workdir).all_steps())


def stored_format(workdir: str, step: int) -> int:
  """The format of the checkpoint at `step` (1 if it records none)."""
  return _format(_reading_manager(workdir), step)


def load_params(workdir: str, networks: tuple[str, ...], step: int | None = None):
  """(step, {network name: params}) from a checkpoint (the newest readable one
  unless `step` is given): those parameters only, on this process's first
  device, whatever devices or processes trained them. Reads only: a damaged
  checkpoint is named in a warning and left where it is."""
  found, params, _ = _newest_readable(_reading_manager(workdir), workdir,
                                      _params_request(networks, workdir), step, 'using')
  if found is None:
    raise FileNotFoundError(f'{checkpoint_dir(workdir)}: no checkpoint')
  return found, params
