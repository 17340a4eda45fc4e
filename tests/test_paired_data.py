"""Paired data for pix2pix: both layouts, one crop and flip per pair, errors."""

import os

import numpy as np
from PIL import Image
import pytest

from configs import tiny_pix2pix
from cyclegan_jax.data import input_pipeline
from cyclegan_jax.data import paired_data
from tests import synthetic


def _save(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path)


def _noise(rng, h, w):
  return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_aligned_images_split_into_left_a_and_right_b(tmp_path):
  rng = np.random.default_rng(0)
  a, b = _noise(rng, 20, 30), _noise(rng, 20, 30)
  _save(str(tmp_path / 'train' / 'x.png'), np.concatenate([a, b], axis=1))
  _save(str(tmp_path / 'test' / 'x.png'), np.concatenate([a, b], axis=1))
  config = tiny_pix2pix.get_config()
  config.data.image_dir = str(tmp_path)
  sources = paired_data.open_paired_sources(config.data)
  got_a, got_b = sources['train'][0]
  np.testing.assert_array_equal(got_a, a)
  np.testing.assert_array_equal(got_b, b)
  assert paired_data.input_and_target({'A': 1, 'B': 2}, 'BtoA') == (2, 1)


def test_both_halves_get_the_same_crop_and_flip(tmp_path):
  """A | A pairs stay identical after random resize, crop and flip, and the
  crops and flips do vary from step to step."""
  rng = np.random.default_rng(0)
  for i in range(3):
    image = _noise(rng, 40, 40)
    _save(str(tmp_path / 'train' / f'{i}.png'), np.concatenate([image, image], axis=1))
  os.makedirs(tmp_path / 'val')
  _save(str(tmp_path / 'val' / '0.png'), np.concatenate([image, image], axis=1))
  config = tiny_pix2pix.get_config()
  config.data.image_dir = str(tmp_path)
  sources = paired_data.open_paired_sources(config.data)  # val/ stands in for test/.
  assert sources['test'].files[0].endswith(os.path.join('val', '0.png'))
  batches = paired_data.PairedBatches(sources['train'], config.data, seed=0, global_batch=2)
  firsts = []
  for step in range(6):
    batch = batches.batch(step)
    assert batch['A'].shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(batch['A'], batch['B'])
    firsts.append(batch['A'][0])
  assert len({x.tobytes() for x in firsts}) > 1
  np.testing.assert_array_equal(batches.batch(4)['A'], paired_data.PairedBatches(
      sources['train'], config.data, seed=0, global_batch=2).batch(4)['A'])


def test_a_sweeps_runs_decode_each_pair_once_and_get_their_solo_batches(tmp_path):
  rng = np.random.default_rng(0)
  for i in range(4):
    _save(str(tmp_path / 'train' / f'{i}.png'), _noise(rng, 40, 80))
    _save(str(tmp_path / 'test' / f'{i}.png'), _noise(rng, 40, 80))
  config = tiny_pix2pix.get_config()
  config.data.image_dir = str(tmp_path)
  source = paired_data.open_paired_sources(config.data)['train']
  runs = paired_data.PairedBatches(source, config.data, seed=2, global_batch=2).for_seeds(
      (2, 7), decoded_cache_mb=16)
  for seed, run in zip((2, 7), runs):
    alone = paired_data.PairedBatches(source, config.data, seed=seed, global_batch=2)
    for step in range(4):
      got, expected = run.batch(step), alone.batch(step)
      np.testing.assert_array_equal(got['A'], expected['A'])
      np.testing.assert_array_equal(got['B'], expected['B'])
  assert runs[0].decoded.decodes == 4 and runs[0].decoded.requests == 16


def test_paired_folders_match_by_file_name(tmp_path):
  rng = np.random.default_rng(0)
  images = {name: (_noise(rng, 8, 8), _noise(rng, 8, 8)) for name in ('b', 'a', 'c')}
  for phase in ('train', 'test'):
    for name, (a, b) in images.items():
      _save(str(tmp_path / f'{phase}A' / f'{name}.png'), a)
      _save(str(tmp_path / f'{phase}B' / f'{name}.bmp'), b)  # Other extension, same name.
  config = tiny_pix2pix.get_config()
  config.data.image_dir = str(tmp_path)
  source = paired_data.open_paired_sources(config.data)['train']
  assert len(source) == 3
  for i, name in enumerate(('a', 'b', 'c')):
    np.testing.assert_array_equal(source[i][0], images[name][0])
    np.testing.assert_array_equal(source[i][1], images[name][1])
  _save(str(tmp_path / 'trainA' / 'lonely.png'), images['a'][0])
  with pytest.raises(ValueError, match=r'trainA: lonely.png have no partner of the same name '
                                       r'in .*trainB'):
    paired_data.open_paired_sources(config.data)


def test_layout_errors_say_what_is_expected(tmp_path):
  config = tiny_pix2pix.get_config()
  config.data.image_dir = str(tmp_path / 'missing')
  with pytest.raises(FileNotFoundError, match='no such folder'):
    paired_data.open_paired_sources(config.data)
  config.data.image_dir = str(tmp_path)
  with pytest.raises(FileNotFoundError, match='expected train/ and test/ of side-by-side AB'):
    paired_data.open_paired_sources(config.data)
  os.makedirs(tmp_path / 'train')
  with pytest.raises(FileNotFoundError, match=r'test: no such folder \(nor val/\)'):
    paired_data.open_paired_sources(config.data)


def test_test_pairs_use_the_test_transform(tmp_path):
  root = synthetic.make_aligned_folder(str(tmp_path), n_train=2, n_test=3)
  config = tiny_pix2pix.get_config()
  config.data.image_dir = root
  pairs = paired_data.test_pairs(paired_data.open_paired_sources(config.data)['test'],
                                 config.data, 2)
  assert pairs['A'].shape == pairs['B'].shape == (2, 32, 32, 3)
  np.testing.assert_array_equal(input_pipeline.to_uint8(pairs['B']),
                                synthetic.to_b(input_pipeline.to_uint8(pairs['A'])))


def test_pairs_of_two_sizes_get_one_crop_and_twins_are_refused(tmp_path):
  """B is brought to A's size first, so that one crop and flip fit both
  (the official code draws them from A's size); two files of one name in a
  folder would make the pairing ambiguous."""
  rng = np.random.default_rng(0)
  for i in range(2):
    image = np.repeat(np.repeat(_noise(rng, 10, 10), 4, axis=0), 4, axis=1)  # 40x40 blocks.
    for phase in ('train', 'test'):
      _save(str(tmp_path / f'{phase}A' / f'{i}.png'), image)
      _save(str(tmp_path / f'{phase}B' / f'{i}.png'),
            np.asarray(Image.fromarray(image).resize((48, 48), Image.NEAREST)))
  config = tiny_pix2pix.get_config()
  config.data.image_dir = str(tmp_path)
  source = paired_data.open_paired_sources(config.data)['train']
  batches = paired_data.PairedBatches(source, config.data, seed=0, global_batch=2)
  for step in range(4):
    batch = batches.batch(step)
    assert np.mean(np.abs(batch['A'] - batch['B'])) < 0.1  # Same crop, same flip.
  _save(str(tmp_path / 'trainB' / '0.jpg'), _noise(rng, 8, 8))
  with pytest.raises(ValueError, match=r'trainB: several files named 0\.\* '):
    paired_data.open_paired_sources(config.data)
