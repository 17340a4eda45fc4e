"""The model-family seam: every family module has the whole interface, and
configs and states find their family."""

import functools
import os

import jax
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import tiny
from configs import tiny_cut
from configs import tiny_pix2pix
from configs import tiny_unsb
from cyclegan_jax import config_checks
from cyclegan_jax import configuration
from cyclegan_jax import families
from cyclegan_jax import generation
from cyclegan_jax import image_io
from cyclegan_jax import inference
from cyclegan_jax import report
from cyclegan_jax import results_page
from cyclegan_jax import state as state_lib
from cyclegan_jax import train
from cyclegan_jax import translate
from cyclegan_jax.data import input_pipeline
from tests import toy_family

INTERFACE = ('KIND', 'State', 'NETWORKS', 'SHAPE_FIELDS', 'SWEEPABLE', 'GATED',
             'add_config_fields', 'check_fields', 'check_config', 'create_generators',
             'generator_channels', 'domain_channels', 'create_state', 'partition_specs',
             'local_step', 'open_training_data', 'sample_rows', 'directions', 'network_for',
             'scored_images', 'results_tables')


@pytest.mark.parametrize('kind', ('cyclegan', 'pix2pix', 'cut', 'unsb'))
def test_every_family_has_the_whole_interface(kind):
  family = families.FAMILIES[kind]
  missing = [name for name in INTERFACE if not hasattr(family, name)]
  assert not missing, missing
  assert family.KIND == kind
  # Everything the docstring lists is in INTERFACE, and nothing else.
  listed = [line.split()[0].split('(')[0] for line in families.__doc__.splitlines()
            if line.startswith('  ') and not line.startswith('   ')]
  assert tuple(listed) == INTERFACE


def test_configs_and_states_find_their_family():
  cyclegan, pix2pix = tiny.get_config(), tiny_pix2pix.get_config()
  assert families.get(cyclegan) is families.cyclegan
  assert families.get(pix2pix) is families.pix2pix
  assert families.get(tiny_cut.get_config()) is families.cut
  stored = cyclegan.to_dict()
  del stored['model']['kind']  # A workdir from before the field: CycleGAN.
  assert families.get(configuration.upgrade(stored)) is families.cyclegan
  pix2pix.model.kind = 'cut?'
  with pytest.raises(ValueError, match=r"^config.model.kind='cut\?': expected one of "
                                       r"cyclegan, pix2pix, cut, unsb$"):
    families.get(pix2pix)
  assert families.get(tiny_unsb.get_config()) is families.unsb
  for config in (tiny.get_config(), tiny_pix2pix.get_config(), tiny_cut.get_config(),
                 tiny_unsb.get_config()):
    abstract = jax.eval_shape(lambda c=config: state_lib.create_state(
        c, (32, 32), 1, steps_per_epoch=10))
    family = families.of_state(abstract)
    assert family is families.get(config)
    assert state_lib.network_names(abstract) == family.NETWORKS
    assert set(family.create_generators(config.model)) == {
        network for _, network in family.directions(config)}
  with pytest.raises(TypeError, match='dict is the train state of no model family'):
    families.of_state({})


@pytest.fixture
def toy(monkeypatch):
  """tests/toy_family.py registered for one test (and removed after it)."""
  monkeypatch.setitem(families.FAMILIES, toy_family.KIND, toy_family)
  return toy_family


@pytest.mark.slow
def test_a_family_from_outside_the_library_trains_resumes_translates_and_fills_the_page(
    toy, image_folder, tmp_path):
  """A plug-in family: one module and one registration, no library change.
  Its config field is in every config made while it is registered, its
  check names it, and its state trains, is saved, resumes, translates and
  fills the results page through the same code as the built-in families."""
  config = tiny.get_config()
  assert config.train.toy_weight == 1.0  # Composed into the defaults from the registry.
  config.model.kind = 'toy'
  config.data.image_dir = image_folder
  config.train.num_steps = 2
  config.train.toy_weight = -1.0
  with pytest.raises(ValueError, match=r'^config.train.toy_weight=-1.0: expected a number >= 0$'):
    config_checks.validate(config, 1)
  config.train.toy_weight = 2.0
  workdir = str(tmp_path / 'run')
  state = train.train_and_evaluate(config, workdir)
  assert isinstance(state, toy.State) and int(state.step) == 2
  config.train.num_steps = 4  # The same command with more steps: resumes at 2.
  resumed = train.train_and_evaluate(config, workdir)
  assert int(resumed.step) == 4
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4']
  assert configuration.load(workdir).train.toy_weight == 2.0

  restored = inference.restore(workdir)
  assert (restored.family, restored.step, restored.generator.network) == (toy, 4, 'gen')
  written = translate.translate_folder(workdir, os.path.join(image_folder, 'testA'),
                                       str(tmp_path / 'out'))
  first = input_pipeline.list_images(os.path.join(image_folder, 'testA'))[0]
  np.testing.assert_array_equal(
      image_io.read(written[0]),
      generation.translate_image(restored.generator.module, restored.generator.params,
                                 input_pipeline.load_image(first)))
  with pytest.raises(ValueError, match='the toy family translates AtoB only'):
    translate.translate_folder(workdir, os.path.join(image_folder, 'testB'),
                               str(tmp_path / 'out_b'), direction='BtoA')
  page = results_page.write_results_page(workdir, num_test=2)
  text = open(page, encoding='utf-8').read()
  assert '<h2>toy: 2 images</h2>' in text and 'images/toy_0001_fake.png' in text
  assert os.path.isfile(os.path.join(os.path.dirname(page), 'images', 'toy_0001_fake.png'))


def test_the_toy_family_has_the_whole_interface():
  assert [name for name in INTERFACE if not hasattr(toy_family, name)] == []


class _Reads:
  """A config that records the dotted name of each field read through it."""

  def __init__(self, config, seen: set, prefix: str = ''):
    object.__setattr__(self, '_config', config)
    object.__setattr__(self, '_seen', seen)
    object.__setattr__(self, '_prefix', prefix)

  def __getattr__(self, name):
    if name.startswith('__') or name not in self._config:
      raise AttributeError(name)
    value, path = self._config[name], self._prefix + name
    if isinstance(value, ml_collections.ConfigDict):
      return _Reads(value, self._seen, path + '.')
    self._seen.add(path)
    return value

  __getitem__ = __getattr__


def _fields_read(config) -> set:
  """The config fields its family reads to check the config, build its state
  and trace its train step (jax.eval_shape: nothing is compiled or run)."""
  family, seen = families.get(config), set()
  reads = _Reads(config, seen)
  family.check_config(reads)
  state = jax.eval_shape(lambda: state_lib.create_state(reads, (32, 32), 1, 10))
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ('data',))
  specs = family.partition_specs(state)
  placed = lambda x, spec: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                sharding=jax.NamedSharding(mesh, spec))
  channels = family.domain_channels(reads)
  batch = {key: placed(jax.ShapeDtypeStruct((1, 32, 32, channels[domain]), jnp.float32),
                       P('data'))
           for key, domain in families.batch_domains(config).items()}
  step = jax.shard_map(functools.partial(
      family.local_step, config=reads,
      schedule=state_lib.learning_rate_schedule(config.train, 10)),
      mesh=mesh, in_specs=(specs, P('data')), out_specs=(specs, P()))
  jax.eval_shape(step, jax.tree.map(placed, state, specs), batch)
  return seen


@pytest.mark.parametrize('module', (tiny, tiny_pix2pix, tiny_cut, tiny_unsb),
                         ids=('cyclegan', 'pix2pix', 'cut', 'unsb'))
def test_each_family_declares_the_fields_of_other_families_it_reads(module, image_folder):
  """What the report's table of config differences relies on: of the fields
  that families add (add_config_fields), a family's state and step read its
  own and exactly the other families' fields it names in ALSO_READS (UNSB:
  CUT's PatchNCE fields); so a field outside them changes nothing it trains."""
  config = module.get_config()
  config.data.image_dir = image_folder
  kind = families.get(config).KIND
  owned = report.family_fields()
  read = _fields_read(config)
  assert owned[kind] <= read  # Every field it adds is one it reads.
  others = set().union(*owned.values()) - owned[kind]
  assert read & others == report.fields_read(kind, owned) - owned[kind]
  assert owned['cyclegan'] == {'train.lambda_cycle', 'train.lambda_identity',
                               'train.pool_size'}
