"""Orbax checkpoints of the whole train state, and the config beside them."""

import json
import os
import re

import jax
import ml_collections
import orbax.checkpoint as ocp

CONFIG_FILE = 'config.json'


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def create_manager(workdir: str, keep: int = 3) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep or None, create=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def prepare_workdir(workdir: str) -> None:
  """Creates the workdir and checks that this process can write there, before
  anything is loaded or compiled."""
  probe = os.path.join(workdir, f'.write_test_{jax.process_index()}')
  try:
    os.makedirs(workdir, exist_ok=True)
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise OSError(f'{workdir}: cannot write to this workdir ({e.strerror or e}); '
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


def save(manager: ocp.CheckpointManager, state) -> None:
  """Saves asynchronously: the arrays are copied off the devices before this
  returns, so the caller may donate `state` to the next step right away.

  Orbax writes into a temporary folder and renames it when complete, so a
  failed or killed save never looks like a checkpoint."""
  step = int(state.step)
  try:
    manager.save(step, args=ocp.args.StandardSave(state))
  except Exception as e:  # pylint: disable=broad-except  # Also an earlier async save's.
    raise _write_error(manager, e) from e


def wait_until_finished(manager: ocp.CheckpointManager) -> None:
  try:
    manager.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except
    raise _write_error(manager, e) from e


def restore_latest(manager: ocp.CheckpointManager, state):
  """The newest checkpoint restored into `state`'s structure and shardings, or
  `state` itself when there is none."""
  step = manager.latest_step()
  if step is None:
    return state
  return manager.restore(step, args=ocp.args.StandardRestore(state))


def write_text_atomically(path: str, text: str) -> None:
  """Writes `path` through a temporary file and a rename, so a kill mid-write
  leaves the old file (or none), never half a file."""
  with open(path + '.tmp', 'w') as f:
    f.write(text)
  os.replace(path + '.tmp', path)


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes workdir/config.json atomically."""
  if jax.process_index() == 0:
    write_text_atomically(os.path.join(workdir, CONFIG_FILE), config.to_json_best_effort(indent=2))


def has_config(workdir: str) -> bool:
  return os.path.isfile(os.path.join(workdir, CONFIG_FILE))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: not found; expected the config.json that training '
                            'writes into its workdir')
  try:
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: not valid JSON ({e})') from None


def load_params(workdir: str, networks: tuple[str, ...], step: int | None = None):
  """(step, {network name: params}) from a checkpoint, without rebuilding the
  state (whose pool shapes depend on the training data)."""
  manager = ocp.CheckpointManager(checkpoint_dir(workdir))
  step = manager.latest_step() if step is None else step
  if step is None or step not in manager.all_steps():
    raise FileNotFoundError(f'{checkpoint_dir(workdir)}: no checkpoint'
                            + ('' if step is None else f' at step {step}'))
  restored = manager.restore(step, args=ocp.args.StandardRestore())
  return step, {name: restored[name]['params'] for name in networks}
