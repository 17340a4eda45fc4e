"""inference.restore: the one way to load trained generators."""

import jax
import numpy as np
import pytest

from cyclegan_jax import checkpoints
from cyclegan_jax import families
from cyclegan_jax import inference


def test_restore_gives_each_direction_its_generator(one_step_workdir):
  default = inference.restore(one_step_workdir)
  assert default.family is families.cyclegan and default.step == 1
  g = default.generator
  assert (g.direction, g.network, g.in_channels, g.out_channels) == ('AtoB', 'gen_ab', 3, 3)
  both = inference.restore(one_step_workdir, 'both')
  assert [(g.direction, g.network) for g in both.generators] == [('AtoB', 'gen_ab'),
                                                                 ('BtoA', 'gen_ba')]
  assert set(both.modules) == set(both.params) == {'gen_ab', 'gen_ba'}
  _, stored = checkpoints.load_params(one_step_workdir, ('gen_ba',))
  jax.tree.map(np.testing.assert_array_equal, both.params['gen_ba'], stored['gen_ba'])
  assert inference.restore(one_step_workdir, 'BtoA', step=1).generator.network == 'gen_ba'


def test_restore_names_what_it_cannot_give(one_step_workdir):
  with pytest.raises(ValueError, match=r"^--direction='CtoD': expected AtoB or BtoA$"):
    inference.restore(one_step_workdir, 'CtoD')
  with pytest.raises(FileNotFoundError, match=r'no checkpoint at step 7 \(steps found: 1\)'):
    inference.restore(one_step_workdir, step=7)
