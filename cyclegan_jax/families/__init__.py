"""Model families: what differs between CycleGAN, pix2pix, CUT and UNSB, one
module each (`cyclegan.py`, `pix2pix.py`, `cut.py`, `unsb.py`), behind one interface that
training, the train step, the config, evaluation, translation, the results
page, export, the PyTorch import and the benchmark call without knowing which
family they hold. A new family is a module with this interface and one
`register(module)` (below, for the built-in ones; anywhere before its config
is made, for a plug-in):

  KIND                 its config.model.kind
  State                its train state: a flax.struct dataclass with `step` and `rng`
  NETWORKS             the TrainState fields of State, generators first
  SHAPE_FIELDS         its config fields that fix the saved state's shapes (or
                       meaning): a checkpoint resumes only with the same values
  SWEEPABLE            its config fields a sweep may vary (docs/sweeps.md): scalars
                       its step reads that change no shape and no program
  GATED                those of them that turn a loss term off at 0
  add_config_fields(config) adds its fields, with their defaults, to a config
                       (configuration.defaults composes every family's)
  check_fields(config) -> None, or a ValueError naming the field: its fields'
                       types and ranges (every config holds them, whatever its kind)
  check_config(config) -> None, or a ValueError naming the field: what training
                       this family needs (its data, its losses' conditions)
  create_generators(model_config) -> {network: generator module}
  generator_channels(model_config, network) -> (input channels, output channels)
  domain_channels(config) -> {'A': channels, 'B': channels} its images are read with
  create_state(config, image_shape, num_devices, tx) -> a fresh State
  partition_specs(state) -> the State's PartitionSpecs over the `data` mesh axis
  local_step(state, batch, *, config, schedule) -> (state, metrics): the
                       per-device program of one train step (train_step.py
                       runs it under shard_map and jit)
  open_training_data(config, shard, channels) -> (batches, sample images, description)
  sample_rows(generators, params, samples, config) -> the sample grid's rows, from
                       {network: its params} of each network in `generators`
  directions(config) -> ((direction, generator network), ...) it translates
  network_for(config, direction or None) -> (network, direction): a ValueError
                       naming a direction it does not translate
  scored_images(config, num_images) -> {direction: (inputs, uint8 real images)}
  results_tables(config, params, generators, num_test) -> [common.ResultsTable]:
                       the results page's tables, as data (results_page.py writes them)

Optional: BATCH_DOMAINS, {batch key: the domain its images come from}, for a
family whose batches hold more than A and B (UNSB's second A image, 'A2');
batch_domains(config) gives {'A': 'A', 'B': 'B'} for the others.

Optional: ALSO_READS, the config fields of other families (their
add_config_fields) that this family reads too (UNSB: CUT's PatchNCE fields).
A family reads its own fields and the general ones; the report's table of
config differences leaves out the fields that no compared run's family reads
(tests/test_families.py traces each family's state and step to check it).

Families hand data (images, rows, titles) to the services that call them and
never import those services. `get(config)` is the family of a config,
`of_state(state)` of a train state.
"""

from cyclegan_jax.families import cut
from cyclegan_jax.families import cyclegan
from cyclegan_jax.families import pix2pix
from cyclegan_jax.families import unsb

FAMILIES = {}


def register(family) -> None:
  """Adds a family module (the interface above) under its KIND."""
  FAMILIES[family.KIND] = family


for _family in (cyclegan, pix2pix, cut, unsb):
  register(_family)


def kinds() -> tuple[str, ...]:
  return tuple(FAMILIES)


def for_model(model_config):
  """The family module of config.model."""
  name = model_config.kind
  if name not in FAMILIES:
    raise ValueError(f'config.model.kind={name!r}: expected one of {", ".join(FAMILIES)}')
  return FAMILIES[name]


def get(config):
  """The family module of a whole config."""
  return for_model(config.model)


def batch_domains(config) -> dict[str, str]:
  """{key of a training batch: the domain ('A' or 'B') of its images}."""
  return dict(getattr(get(config), 'BATCH_DOMAINS', {'A': 'A', 'B': 'B'}))


def of_state(state):
  """The family module whose State `state` is (or whose State's structure it
  has: jax.eval_shape and sharding specs give States too)."""
  for family in FAMILIES.values():
    if isinstance(state, family.State):
      return family
  raise TypeError(f'{type(state).__name__} is the train state of no model family')
