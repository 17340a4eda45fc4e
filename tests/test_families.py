"""The model-family seam: every family module has the whole interface, and
configs and states find their family."""

import os

import jax
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
