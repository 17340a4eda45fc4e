"""`--mode=extract`: one run of a sweep as an ordinary workdir.

  python main.py --mode=extract --workdir=W --run=seed=1 --output=W2 [--step=N]

W2 gets the run's config (config.json: the sweep's config with the run's
values), its slice of the checkpoint (weights, optimiser state, pools, step and
key: everything the run would resume from in the sweep) and a copy of its
folder W/runs/<name>/ (samples, evaluation, TensorBoard events). Training W2
with that config resumes the run alone and continues it as the sweep would
have, on the devices the run had in the sweep. W and W2 may be on Cloud
Storage (gs://...), either or both.
"""


import jax
import numpy as np

from cyclegan_jax import checkpoints
from cyclegan_jax import configuration
from cyclegan_jax import inference
from cyclegan_jax import storage
from cyclegan_jax import sweeps


def extract_run(workdir: str, run: str | None, output: str, step: int | None = None) -> str:
  """Writes run `run` (name or index) of the sweep in `workdir` at checkpoint
  `step` (default: the newest) into the new workdir `output`; returns a line
  saying what was written and how to resume it."""
  if not sweeps.is_sweep(configuration.load(workdir)):
    raise ValueError(f'--mode=extract: {workdir} holds one run, not a sweep; it is an '
                     'ordinary workdir already')
  config = inference.load_config(workdir, run)  # Refuses a missing or unknown --run.
  found = sweeps.find(configuration.load(workdir), str(run))
  output = storage.absolute(output)
  if storage.exists(output) and (not storage.isdir(output) or storage.listdir(output)):
    raise ValueError(f'--output={output}: exists and is not an empty folder; extract writes '
                     'a new workdir')
  step, state = checkpoints.load_state(workdir, step)
  one_run = jax.tree.map(lambda x: np.asarray(x)[found.index], state)
  checkpoints.prepare_workdir(output)
  folder = storage.join(storage.absolute(workdir), found.folder)
  if storage.isdir(folder):  # Samples, evaluation, TensorBoard events.
    storage.copytree(folder, output)
  manager = checkpoints.create_manager(output, config.keep_checkpoints)
  checkpoints.save(manager, one_run, step, checkpoints.stored_format(workdir, step))
  checkpoints.wait_until_finished(manager)
  checkpoints.save_config(config, output)
  overrides = ' '.join(f'--config.{name}={value}' for name, value in found.values.items())
  return (f'Wrote run {found.index} ({found.name}) at step {step} to {output}; train it on '
          f'with the sweep\'s config file and {overrides} --workdir={output}')
