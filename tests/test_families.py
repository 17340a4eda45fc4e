"""The model-family seam: every family module has the whole interface, and
configs and states find their family."""

import jax
import pytest

from configs import tiny
from configs import tiny_cut
from configs import tiny_pix2pix
from cyclegan_jax import configuration
from cyclegan_jax import families
from cyclegan_jax import state as state_lib

INTERFACE = ('KIND', 'State', 'NETWORKS', 'SHAPE_FIELDS', 'add_config_fields', 'check_fields',
             'check_config', 'create_generators', 'generator_channels', 'domain_channels',
             'create_state', 'partition_specs', 'local_step', 'open_training_data',
             'sample_rows', 'directions', 'network_for', 'scored_images', 'results_tables')


@pytest.mark.parametrize('kind', ('cyclegan', 'pix2pix', 'cut'))
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
                                       r"cyclegan, pix2pix, cut$"):
    families.get(pix2pix)
  for config in (tiny.get_config(), tiny_pix2pix.get_config(), tiny_cut.get_config()):
    abstract = jax.eval_shape(lambda c=config: state_lib.create_state(
        c, (32, 32), 1, state_lib.learning_rate_schedule(c.train, 10)))
    family = families.of_state(abstract)
    assert family is families.get(config)
    assert state_lib.network_names(abstract) == family.NETWORKS
    assert set(family.create_generators(config.model)) == {
        network for _, network in family.directions(config)}
  with pytest.raises(TypeError, match='dict is the train state of no model family'):
    families.of_state({})
