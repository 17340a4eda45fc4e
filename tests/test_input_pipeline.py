import os

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from configs import default
from cyclegan_jax import input_pipeline


def _data_config(**overrides):
  config = default.get_config().data
  config.load_size, config.crop_size = 36, 32
  config.update(overrides)
  return config


def _image(h, w, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize('mode,shape', [
    ('resize_and_crop', (32, 32)), ('crop', (32, 32)), ('scale_width', (40, 36)),
    ('scale_width_and_crop', (32, 32)), ('none', (48, 28))])  # round(12.5) = 12, as Python (and the official code) rounds.
def test_preprocess_modes(mode, shape):
  image = _image(50, 45 if mode.startswith('scale') else 29)
  out = input_pipeline.preprocess(image, _data_config(preprocess=mode),
                                  np.random.default_rng(0))
  assert out.shape == (*shape, 3) and out.dtype == np.float32
  assert out.min() >= -1 and out.max() <= 1


def test_crop_of_small_images_scales_up_first():
  out = input_pipeline.preprocess(_image(10, 20), _data_config(preprocess='crop'),
                                  np.random.default_rng(0))
  assert out.shape == (32, 32, 3)


def test_test_transform_is_deterministic_resize_without_flip():
  image = _image(64, 64)
  config = _data_config()
  a = input_pipeline.preprocess(image, config, None)
  np.testing.assert_array_equal(a, input_pipeline.preprocess(image, config, None))
  expected = np.asarray(Image.fromarray(image).resize((32, 32), Image.BICUBIC), np.float32)
  np.testing.assert_allclose(a, expected / 127.5 - 1, atol=1e-6)


def test_flip_is_horizontal_and_random():
  image = _image(32, 32)
  config = _data_config(preprocess='crop')
  outs = [input_pipeline.preprocess(image, config, np.random.default_rng(s)) for s in range(20)]
  plain = image / 127.5 - 1
  flipped = sum(np.allclose(o, plain[:, ::-1], atol=1e-6) for o in outs)
  assert sum(np.allclose(o, plain, atol=1e-6) for o in outs) + flipped == 20 and 3 < flipped < 17
  config.flip = False
  assert all(np.allclose(input_pipeline.preprocess(image, config, np.random.default_rng(s)),
                         plain, atol=1e-6) for s in range(5))


class _Ids(list):
  """A source whose image i is filled with the value i (and carries it through)."""

  def __getitem__(self, i):
    return np.full((36, 36, 3), super().__getitem__(i), np.uint8)


def _ids(batch):
  return np.rint((batch[:, 0, 0, 0] + 1) * 127.5).astype(int).tolist()


def test_batches_are_a_pure_function_of_seed_and_step():
  a, b = _Ids(range(10)), _Ids(range(100, 107))
  config = _data_config()
  batches = input_pipeline.UnpairedBatches(a, b, config, seed=3, global_batch=2)
  assert batches.steps_per_epoch == 5
  again = input_pipeline.UnpairedBatches(a, b, config, seed=3, global_batch=2)
  for step in (0, 4, 17):
    np.testing.assert_array_equal(batches.batch(step)['A'], again.batch(step)['A'])
    np.testing.assert_array_equal(batches.batch(step)['B'], again.batch(step)['B'])
  # One epoch sees every A image exactly once, in a shuffled order.
  epoch = sum((_ids(batches.batch(s)['A']) for s in range(5)), [])
  assert sorted(epoch) == list(range(10)) and epoch != list(range(10))
  assert set(_ids(batches.batch(3)['B'])) <= set(range(100, 107))
  other_seed = input_pipeline.UnpairedBatches(a, b, config, seed=4, global_batch=2)
  assert sum((_ids(other_seed.batch(s)['A']) for s in range(5)), []) != epoch
  # The prefetching iterator yields the same batches from any start.
  iterator = batches.iterate(start_step=3, num_workers=2)
  for step in (3, 4, 5):
    np.testing.assert_array_equal(next(iterator)['A'], batches.batch(step)['A'])


class _Recording(_Ids):
  """An _Ids source that remembers which indices were read."""

  def __init__(self, *args):
    super().__init__(*args)
    self.read = set()

  def __getitem__(self, i):
    self.read.add(int(i))
    return super().__getitem__(i)


def test_processes_read_disjoint_shards():
  config = _data_config()
  reads_a, reads_b, seen_a = [], [], []
  for process in range(2):
    a, b = _Recording(range(11)), _Recording(range(100, 109))
    batches = input_pipeline.UnpairedBatches(a, b, config, seed=0, global_batch=4,
                                             process_index=process, process_count=2)
    assert batches.local_batch == 2 and batches.steps_per_epoch == 2  # 11 // 4
    ids = sum((_ids(batches.batch(s)['A']) for s in range(3)), [])  # One local epoch.
    reads_a.append(a.read)
    reads_b.append(b.read)
    seen_a.append(ids)
  # Even contiguous shards: A 0-4 | 5-10, B 0-3 | 4-8 (tfds.even_splits' boundaries).
  assert reads_a == [set(range(5)), set(range(5, 11))]
  assert reads_b[0] <= set(range(4)) and reads_b[1] <= set(range(4, 9))
  assert sorted(seen_a[1]) == list(range(5, 11))  # Every image of its shard, once.
  with pytest.raises(ValueError, match='trainB has 1 images, fewer than the 2 processes'):
    input_pipeline.UnpairedBatches(_Ids(range(4)), _Ids([7]), config, seed=0, global_batch=2,
                                   process_index=0, process_count=2)
  with pytest.raises(ValueError, match='batch_size=3 does not divide over 2 processes'):
    input_pipeline.UnpairedBatches(_Ids(range(4)), _Ids(range(4)), config, seed=0,
                                   global_batch=3, process_index=0, process_count=2)


def test_folder_source_reads_every_format_and_mode_as_rgb(tmp_path):
  rgb = _image(12, 10)
  Image.fromarray(rgb).save(tmp_path / 'a.png')
  Image.fromarray(rgb).save(tmp_path / 'b.jpg')
  Image.fromarray(rgb).save(tmp_path / 'c.JPEG')
  Image.fromarray(rgb).save(tmp_path / 'd.bmp')
  Image.fromarray(rgb).save(tmp_path / 'e.webp', lossless=True)
  Image.fromarray(rgb[..., 0]).save(tmp_path / 'f.png')  # Grayscale.
  Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(tmp_path / 'g.png')  # RGBA.
  Image.fromarray(rgb).convert('P').save(tmp_path / 'h.png')  # Palette.
  (tmp_path / 'notes.txt').write_text('not an image')
  source = input_pipeline.FolderSource(str(tmp_path))
  assert [os.path.basename(f) for f in source.files] == [
      'a.png', 'b.jpg', 'c.JPEG', 'd.bmp', 'e.webp', 'f.png', 'g.png', 'h.png']
  for i in range(len(source)):
    assert source[i].shape == (12, 10, 3) and source[i].dtype == np.uint8
  np.testing.assert_array_equal(source[0], rgb)
  np.testing.assert_array_equal(source[4], rgb)
  np.testing.assert_array_equal(source[5], np.repeat(rgb[..., :1], 3, axis=-1))


def test_missing_or_empty_folders_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match='trainA: no such folder'):
    input_pipeline.FolderSource(str(tmp_path / 'trainA'))
  (tmp_path / 'trainB').mkdir()
  with pytest.raises(FileNotFoundError, match='trainB: no images found'):
    input_pipeline.FolderSource(str(tmp_path / 'trainB'))


def test_tfds_source_under_mock_data_resizes_random_sizes():
  config = _data_config()
  with tfds.testing.mock_data(num_examples=6):
    sources = input_pipeline.open_sources(config)
    assert set(sources) == {'trainA', 'trainB', 'testA', 'testB'}
    assert len(sources['trainA']) == 6
    batches = input_pipeline.UnpairedBatches(sources['trainA'], sources['trainB'], config,
                                             seed=0, global_batch=2)
    batch = batches.batch(0)
  assert batch['A'].shape == (2, 32, 32, 3) and batch['B'].shape == (2, 32, 32, 3)
