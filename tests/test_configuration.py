"""configuration: the defaults composed from the families, and a stored
config.json upgraded once when read."""

import json

import pytest

from configs import tiny
from cyclegan_jax import configuration
from cyclegan_jax import families


def test_defaults_hold_every_registered_familys_fields():
  config = configuration.defaults()
  assert config.train.lambda_cycle == 10.0 and config.train.pool_size == 50  # CycleGAN's.
  assert config.train.lambda_l1 == 100.0 and config.data.direction == 'AtoB'  # pix2pix's.
  assert config.model.netf_nc == 256 and config.train.nce_layers == (0, 4, 8, 12, 16)  # CUT's.
  assert configuration.defaults('cycle_gan/maps').data.tfds_name == 'cycle_gan/maps'
  assert config.model.unsb_num_timesteps == 5 and config.train.lambda_sb == 1.0  # UNSB's.
  assert set(families.FAMILIES) == {'cyclegan', 'pix2pix', 'cut', 'unsb'}


def test_a_stored_config_reads_as_it_was_trained(tmp_path):
  """Fields a config.json lacks take today's defaults (or FORMER_DEFAULTS'),
  its own values win, lists are tuples again, and a field today's defaults
  lack is kept."""
  stored = json.loads(tiny.get_config().to_json())
  del stored['model']['norm'], stored['eval']
  stored['train']['nce_layers'] = [0, 4]
  stored['train']['lambda_cycle'] = 5  # An int where the field is a float.
  stored['data']['value_range'] = [0, 4095]
  stored['retired_field'] = 'kept'
  (tmp_path / 'config.json').write_text(json.dumps(stored))
  config = configuration.load(str(tmp_path))
  assert config.model.norm == 'instance' and config.eval.batch_size == 50
  assert config.model.generator == 'resnet_2blocks' and config.model.ngf == 8
  assert config.train.nce_layers == (0, 4) and config.data.value_range == (0, 4095)
  assert config.train.lambda_cycle == 5.0 and isinstance(config.train.lambda_cycle, float)
  assert config.retired_field == 'kept'


def test_former_defaults_apply_only_where_the_field_is_missing(monkeypatch):
  monkeypatch.setattr(configuration, 'FORMER_DEFAULTS', {'model.ngf': 32})
  stored = tiny.get_config().to_dict()
  assert configuration.upgrade(stored).model.ngf == 8  # Its own value.
  del stored['model']['ngf']
  assert configuration.upgrade(stored).model.ngf == 32  # Trained before the field: 32.


def test_unreadable_config_files_are_one_line(tmp_path):
  with pytest.raises(FileNotFoundError, match=r'config.json: not found; expected the '):
    configuration.load(str(tmp_path))
  (tmp_path / 'config.json').write_text('{"model": ')
  with pytest.raises(ValueError, match=r'config.json: not valid JSON'):
    configuration.load(str(tmp_path))
  (tmp_path / 'config.json').write_text('[1, 2]')
  with pytest.raises(ValueError, match=r'config.json: expected a JSON object of config fields$'):
    configuration.load(str(tmp_path))
