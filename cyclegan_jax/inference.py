"""One way to load a trained generator: `restore(workdir, direction, step)`
gives what translating needs (the config as stored and upgraded, the family,
each generator module with its parameters and channels, the step). translate,
video, export, the results page and evaluation all load through it."""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from cyclegan_jax import checkpoints
from cyclegan_jax import configuration
from cyclegan_jax import families
from cyclegan_jax import generation
from cyclegan_jax import storage
from cyclegan_jax import sweeps

ALL = 'both'  # restore's direction for every generator the model has.


@dataclasses.dataclass(frozen=True)
class Generator:
  direction: str  # 'AtoB' or 'BtoA'.
  network: str  # Its field in the train state: gen_ab, gen_ba, gen.
  module: nn.Module
  params: Any
  in_channels: int
  out_channels: int


@dataclasses.dataclass(frozen=True)
class Restored:
  config: ml_collections.ConfigDict  # As stored, upgraded (configuration.load).
  family: Any  # The family module (families/).
  step: int  # The checkpoint's.
  generators: tuple[Generator, ...]  # In the family's order of directions.

  @property
  def generator(self) -> Generator:
    """The one generator restored for a single direction."""
    return self.generators[0]

  @property
  def modules(self) -> dict:
    return {g.network: g.module for g in self.generators}

  @property
  def params(self) -> dict:
    return {g.network: g.params for g in self.generators}


def wanted(config, direction: str | None) -> list[tuple[str, str]]:
  """[(network, direction)] that `direction` names: None the default one
  (CycleGAN's AtoB, pix2pix's trained one), ALL every one; a ValueError (one
  line) for a direction the model does not translate."""
  family = families.get(config)
  if direction == ALL:
    return [(network, name) for name, network in family.directions(config)]
  return [family.network_for(config, direction)]


def generator_module(config: ml_collections.ConfigDict, direction: str | None = None):
  """The module (no parameters) of `direction`'s generator, as restore builds
  it: what a caller asks before loading (draws_noise, num_timesteps)."""
  network, _ = wanted(config, direction)[0]
  return families.get(config).create_generators(config.model)[network]


def _sweep_run(workdir: str, run: str | None):
  """(the workdir's stored config, the sweeps.Run `run` names or None); a
  ValueError for a sweep without --run or a --run without a sweep."""
  config = configuration.load(workdir)
  if not sweeps.is_sweep(config):
    if run is not None:
      raise ValueError(f'--run={run}: {workdir} holds one run, not a sweep; leave --run out')
    return config, None
  if run is None:
    listing = ', '.join(f'{r.index}: {r.name}' for r in sweeps.runs(config))
    raise ValueError(f'{workdir} holds a sweep; choose a run with --run=NAME or --run=INDEX '
                     f'({listing})')
  return config, sweeps.find(config, str(run))


def load_config(workdir: str, run: str | None = None) -> ml_collections.ConfigDict:
  """The workdir's config (configuration.load); of a sweep, run `run`'s (by
  name or index), which a sweep's workdir needs."""
  config, found = _sweep_run(workdir, run)
  return config if found is None else sweeps.run_config(config, found)


def output_folder(workdir: str, run: str | None = None) -> str:
  """Where a run's evaluation and results page go: the workdir, or a sweep
  run's folder W/runs/<name>/."""
  _, found = _sweep_run(workdir, run)
  workdir = storage.absolute(workdir)
  return workdir if found is None else storage.join(workdir, found.folder)


def with_sampling(module, config, nfe: int | None = None, seed: int | None = None):
  """`module` translating in `nfe` steps from noise seed `seed` (None: as
  built, the config's model.unsb_nfe and seed 0); a ValueError (one line)
  for an nfe outside 1..T, or either for a generator that draws no noise."""
  if nfe is None and seed is None:
    return module
  if not generation.draws_noise(module):
    flag = f'--nfe={nfe}' if nfe is not None else f'--seed={seed}'
    raise ValueError(f'{flag}: a {config.model.kind} model translates in one step without '
                     'noise; --nfe and --seed are for models that translate in steps from '
                     'noise (UNSB)')
  if nfe is not None and not 1 <= nfe <= module.num_timesteps:
    raise ValueError(f'--nfe={nfe}: expected 1 to {module.num_timesteps} (the model\'s '
                     f'model.unsb_num_timesteps={module.num_timesteps} steps)')
  return module.clone(**{name: value for name, value in (('nfe', nfe), ('seed', seed))
                         if value is not None})


def restore(workdir: str, direction: str | None = None, step: int | None = None,
            config: ml_collections.ConfigDict | None = None, run: str | None = None,
            nfe: int | None = None, seed: int | None = None) -> Restored:
  """The generator(s) of `direction` (None: the default one; 'both': all) at
  checkpoint `step` (None: the newest readable one). `config`, when given, is
  the workdir's already loaded (configuration.load); its generators are built
  from it (export builds float32 variants). `run` picks a sweep's run (by
  name or index; a sweep's workdir needs it). `nfe` and `seed` set the steps
  and the noise of a generator that translates in steps (with_sampling)."""
  _, sweep_run = _sweep_run(workdir, run)
  config = config if config is not None else load_config(workdir, run)
  family = families.get(config)
  chosen = wanted(config, direction)
  modules = {network: with_sampling(module, config, nfe, seed)  # Bad values before loading.
             for network, module in family.create_generators(config.model).items()}
  found, params = checkpoints.load_params(workdir, tuple(network for network, _ in chosen), step)
  if sweep_run is not None:  # A sweep's checkpoint holds every run on a leading axis.
    params = jax.tree.map(lambda x: x[sweep_run.index], params)
  generators = tuple(
      Generator(name, network, modules[network], params[network],
                *family.generator_channels(config.model, network))
      for network, name in chosen)
  return Restored(config, family, int(found), generators)
