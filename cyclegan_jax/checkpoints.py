"""Orbax checkpoints of the whole train state, and the config beside them."""

import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp

CONFIG_FILE = 'config.json'


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def create_manager(workdir: str, keep: int = 3) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep or None, create=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(manager: ocp.CheckpointManager, state) -> None:
  """Saves asynchronously: the arrays are copied off the devices before this
  returns, so the caller may donate `state` to the next step right away."""
  manager.save(int(state.step), args=ocp.args.StandardSave(state))


def restore_latest(manager: ocp.CheckpointManager, state):
  """The newest checkpoint restored into `state`'s structure and shardings, or
  `state` itself when there is none."""
  step = manager.latest_step()
  if step is None:
    return state
  return manager.restore(step, args=ocp.args.StandardRestore(state))


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, CONFIG_FILE), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: not found; expected the config.json that training '
                            'writes into its workdir')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


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
