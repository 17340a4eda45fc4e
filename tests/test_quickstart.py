import importlib.util
import os

import numpy as np
import pytest

from cyclegan_jax.data import quickstart_data
from cyclegan_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quickstart_config():
  spec = importlib.util.spec_from_file_location(
      'quickstart', os.path.join(REPO, 'configs', 'quickstart.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_dataset_is_built_once_from_packaged_photos(tmp_path):
  root = quickstart_data.build('skimage_dusk', str(tmp_path))
  assert root == str(tmp_path / 'skimage_dusk')
  for split, count in quickstart_data.COUNTS.items():
    assert len(os.listdir(os.path.join(root, split))) == count
  first = os.path.join(root, 'trainA', '0000.png')
  stamp = os.stat(first).st_mtime_ns
  assert quickstart_data.build('skimage_dusk', str(tmp_path)) == root
  assert os.stat(first).st_mtime_ns == stamp  # Reused, not rebuilt.
  assert not [n for n in os.listdir(tmp_path) if n.startswith('.building-')]
  with pytest.raises(ValueError, match='config.data.builtin'):
    quickstart_data.build('imagenet', str(tmp_path))


def test_dusk_darkens_and_warms():
  day = np.full((4, 4, 3), 200, np.uint8)
  r, g, b = quickstart_data.dusk(day)[0, 0].astype(int)
  assert r > g > b and r < 200 and b < 100


def test_quickstart_config_trains_a_few_steps(tmp_path):
  config = _quickstart_config()
  config.data.cache_dir = str(tmp_path / 'cache')
  config.train.num_steps = 2
  state = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert int(state.step) == 2
  assert os.path.isfile(tmp_path / 'run' / 'samples' / 'step_00000002.png')
