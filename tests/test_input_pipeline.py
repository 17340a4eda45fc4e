import os
import struct
import threading
import time
import zlib

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from configs import default
from cyclegan_jax import image_io
from cyclegan_jax.data import input_pipeline


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


@pytest.mark.parametrize('mode', ['resize_and_crop', 'crop', 'scale_width_and_crop'])
@pytest.mark.parametrize('h,w', [(10, 20), (5, 3), (1, 40)])
def test_images_smaller_than_the_crop_are_scaled_up_first(mode, h, w):
  config = _data_config(preprocess=mode)
  for rng in (np.random.default_rng(0), None):  # Training and test transforms.
    assert input_pipeline.preprocess(_image(h, w), config, rng).shape == (32, 32, 3)


def test_a_large_photo_loads_and_preprocesses_quickly(tmp_path):
  gradient = Image.linear_gradient('L').resize((4000, 3000))
  Image.merge('RGB', [gradient, gradient.transpose(Image.Transpose.ROTATE_180), gradient]).save(
      tmp_path / 'big.jpg', quality=90)
  config = default.get_config().data  # 286 -> 256, as for real training.
  start = time.perf_counter()
  image = input_pipeline.load_image(str(tmp_path / 'big.jpg'))
  out = input_pipeline.preprocess(image, config, np.random.default_rng(0))
  seconds = time.perf_counter() - start
  assert image.shape == (3000, 4000, 3) and out.shape == (256, 256, 3)
  assert seconds < 2, f'{seconds:.2f} s for one 4000x3000 JPEG'  # About 0.2 s on 2 CPU cores.


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


class _Counting(_Ids):
  """An _Ids source that counts its reads, with images of varied content
  (noise plus the id), so a crop or flip mix-up shows."""

  def __init__(self, *args):
    super().__init__(*args)
    self.reads = 0
    self._lock = threading.Lock()

  def __getitem__(self, i):
    with self._lock:
      self.reads += 1
    image = _image(40, 44, seed=int(i))
    image[0, 0] = list.__getitem__(self, i)
    return image


@pytest.mark.parametrize('mode', ['resize_and_crop', 'scale_width_and_crop', 'crop'])
def test_a_sweeps_runs_decode_each_image_once_and_get_their_solo_batches(mode):
  config = _data_config(preprocess=mode)
  a, b = _Counting(range(6)), _Counting(range(100, 105))
  seeds = (0, 1, 5)
  solo = [input_pipeline.UnpairedBatches(_Counting(range(6)), _Counting(range(100, 105)),
                                         config, seed=s, global_batch=2) for s in seeds]
  first = input_pipeline.UnpairedBatches(a, b, config, seed=seeds[0], global_batch=2)
  runs = first.for_seeds(seeds, decoded_cache_mb=64)
  assert [r.seed for r in runs] == list(seeds) and len({id(r.decoded) for r in runs}) == 1
  iterators = [r.iterate(0, num_workers=3) for r in runs]  # Threads share the store.
  for step in range(7):
    for run, iterator, alone in zip(runs, iterators, solo):
      got, expected = next(iterator), alone.batch(step)
      np.testing.assert_array_equal(got['A'], expected['A'])
      np.testing.assert_array_equal(got['B'], expected['B'])
  for iterator in iterators:
    iterator.close()
  # 3 runs x 7 steps x 2 pairs read 84 images; each of the 11 was decoded once.
  decoded = runs[0].decoded
  assert a.reads + b.reads == decoded.decodes == 11 and decoded.requests >= 84
  # Without the store, every run reads for itself.
  a2, b2 = _Counting(range(6)), _Counting(range(100, 105))
  unshared = input_pipeline.UnpairedBatches(a2, b2, config, 0, 2).for_seeds(seeds, 0)
  for run in unshared:
    run.batch(0)
  assert unshared[0].decoded is None and a2.reads + b2.reads == 12


def test_the_decoded_store_drops_the_least_recently_used_beyond_its_size():
  store = input_pipeline.DecodedImages(max_bytes=3000)
  make = lambda i: lambda: np.full(1000, i, np.uint8)
  for key in (0, 1, 2, 0, 3):  # 0 used again before 3 arrives: 1 is dropped.
    assert store.get(key, make(key))[0] == key
  assert store.decodes == 4
  store.get(1, make(1))
  store.get(0, make(0))
  assert store.decodes == 5  # 1 again (dropped); 0 was kept.
  store.get('big', lambda: np.zeros(5000, np.uint8))  # Larger than the store: not kept.
  store.get('big', lambda: np.zeros(5000, np.uint8))
  assert store.decodes == 7


class _Recording(_Ids):
  """An _Ids source that remembers which indices were read."""

  def __init__(self, *args):
    super().__init__(*args)
    self.read = set()

  def __getitem__(self, i):
    self.read.add(int(i))
    return super().__getitem__(i)


class _Closing(_Ids):
  """An _Ids source whose second read closes `iterator`, from a worker thread,
  as the garbage collector may do to an abandoned iterator."""

  def __init__(self, *args):
    super().__init__(*args)
    self.reads, self.iterator, self.error = 0, None, None
    self.go, self.closed = threading.Event(), threading.Event()

  def __getitem__(self, i):
    self.reads += 1
    if self.reads == 2:
      self.go.wait(10)
      try:
        self.iterator.close()
      except Exception as e:  # pylint: disable=broad-except
        self.error = e
      self.closed.set()
    return super().__getitem__(i)


def test_an_iterator_can_be_closed_from_its_own_worker_thread():
  a = _Closing(range(4))
  batches = input_pipeline.UnpairedBatches(a, _Ids(range(4)), _data_config(), seed=0,
                                           global_batch=1)
  a.iterator = batches.iterate(0, num_workers=1)
  next(a.iterator)  # Step 1, the second read of A, is under way in the worker.
  a.go.set()
  assert a.closed.wait(10) and a.error is None, a.error

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
  Image.fromarray(rgb[..., 0]).convert('LA').save(tmp_path / 'i.png')  # Grayscale + alpha.
  Image.fromarray(rgb).convert('CMYK').save(tmp_path / 'j.jpg', quality=100)
  Image.fromarray(rgb[..., 0] > 127).save(tmp_path / 'k.png')  # 1 bit.
  (tmp_path / 'notes.txt').write_text('not an image')
  (tmp_path / 'folder.png').mkdir()  # Not a file: not an image either.
  source = input_pipeline.FolderSource(str(tmp_path))
  assert [os.path.basename(f) for f in source.files] == [
      'a.png', 'b.jpg', 'c.JPEG', 'd.bmp', 'e.webp', 'f.png', 'g.png', 'h.png', 'i.png',
      'j.jpg', 'k.png']
  for i in range(len(source)):
    assert source[i].shape == (12, 10, 3) and source[i].dtype == np.uint8
  np.testing.assert_array_equal(source[0], rgb)
  np.testing.assert_array_equal(source[4], rgb)
  np.testing.assert_array_equal(source[5], np.repeat(rgb[..., :1], 3, axis=-1))
  np.testing.assert_array_equal(source[8], np.repeat(rgb[..., :1], 3, axis=-1))
  assert np.abs(source[9].astype(int) - rgb).mean() < 8  # CMYK back to RGB (JPEG error).
  assert set(np.unique(source[10])) <= {0, 255}


def _png16(path, pixels):
  """Writes a 16-bit PNG by hand (Pillow writes 16 bits only for grayscale):
  uint16 pixels (H, W, C), C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA."""
  h, w, c = pixels.shape
  header = struct.pack('>IIBBBBB', w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
  rows = b''.join(b'\0' + row.astype('>u2').tobytes() for row in pixels)

  def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))

  path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header)
                   + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b''))


def test_sixteen_bit_pngs_are_read_at_full_precision(tmp_path):
  values = np.array([[65535, 32768, 0, 7 * 257 + 3]], np.uint16)
  Image.fromarray(values).save(tmp_path / 'pil.png')  # Mode 'I;16'.
  assert Image.open(tmp_path / 'pil.png').mode == 'I;16'
  for channels in (1, 2, 3, 4):
    _png16(tmp_path / f'{channels}.png', np.repeat(values[..., None], channels, axis=-1))
  for name in ('pil.png', '1.png', '2.png', '3.png', '4.png'):
    for channels in (1, 3):  # Gray, as RGB (repeated), RGB as gray (luminance of equal values).
      image = input_pipeline.load_image(str(tmp_path / name), channels)
      assert image.dtype == np.uint16 and image.shape == (1, 4, channels), name
      np.testing.assert_array_equal(image, np.repeat(values[..., None], channels, -1), name)
  # A colour 16-bit PNG keeps each channel's low byte too (Pillow would not).
  rgb = np.stack([values, values // 3, 65535 - values], axis=-1)
  _png16(tmp_path / 'rgb.png', rgb)
  np.testing.assert_array_equal(input_pipeline.load_image(str(tmp_path / 'rgb.png')), rgb)
  # Mapped to [-1, 1] over 0-65535, no resampling at a multiple of 4.
  square = np.repeat(values, 4, axis=0)[..., None]
  unit = input_pipeline.preprocess(square, _data_config(preprocess='none'), None)
  assert unit.dtype == np.float32 and unit.shape == (4, 4, 1)
  np.testing.assert_allclose(unit, square / 32767.5 - 1, atol=1e-6)
  assert unit[0, 1, 0] > 0 and unit[0, 3, 0] > -1 + 2 * (7 * 257) / 65535


def test_exif_orientation_is_applied(tmp_path):
  rgb = np.zeros((10, 20, 3), np.uint8)
  rgb[:, :10, 0] = rgb[:, 10:, 2] = 255  # Left half red, right half blue.
  exif = Image.Exif()
  exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display.
  Image.fromarray(rgb).save(tmp_path / 'phone.jpg', exif=exif, quality=95)
  image = input_pipeline.load_image(str(tmp_path / 'phone.jpg'))
  assert image.shape == (20, 10, 3)  # Portrait, as displayed.
  assert np.abs(image.astype(int) - np.rot90(rgb, -1)).mean() < 8  # Red on top.


def test_missing_or_empty_folders_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match='trainA: no such folder'):
    input_pipeline.FolderSource(str(tmp_path / 'trainA'))
  (tmp_path / 'trainB').mkdir()
  with pytest.raises(FileNotFoundError, match='trainB: no images found'):
    input_pipeline.FolderSource(str(tmp_path / 'trainB'))
  (tmp_path / 'trainB' / 'notes.txt').write_text('not an image')
  with pytest.raises(FileNotFoundError, match='trainB: no images found; expected files ending'):
    input_pipeline.FolderSource(str(tmp_path / 'trainB'))
  (tmp_path / 'file').write_text('')
  with pytest.raises(FileNotFoundError, match='file: not a folder'):
    input_pipeline.FolderSource(str(tmp_path / 'file'))


def _split_folders(root, splits=input_pipeline.SPLITS):
  for split in splits:
    (root / split).mkdir(parents=True)
    Image.fromarray(_image(8, 8)).save(root / split / 'x.png')
  return root


@pytest.mark.parametrize('missing', input_pipeline.SPLITS)
def test_open_sources_names_each_missing_split(tmp_path, missing):
  root = _split_folders(tmp_path, [s for s in input_pipeline.SPLITS if s != missing])
  with pytest.raises(FileNotFoundError) as error:
    input_pipeline.open_sources(_data_config(image_dir=str(root)))
  assert str(error.value).startswith(f'{root / missing}: no such folder')
  (root / missing).mkdir()  # Empty.
  with pytest.raises(FileNotFoundError, match=f'{root / missing}: no images found'):
    input_pipeline.open_sources(_data_config(image_dir=str(root)))


def test_open_sources_names_a_missing_image_dir(tmp_path):
  with pytest.raises(FileNotFoundError,
                     match=f'config.data.image_dir={tmp_path / "nowhere"}: no such folder'):
    input_pipeline.open_sources(_data_config(image_dir=str(tmp_path / 'nowhere')))
  # Two splits missing: both named at once.
  root = _split_folders(tmp_path / 'data', ['trainA', 'trainB'])
  with pytest.raises(FileNotFoundError, match=f'{root / "testA"}, {root / "testB"}: no such'):
    input_pipeline.open_sources(_data_config(image_dir=str(root)))
  root = _split_folders(tmp_path / 'ok')
  sources = input_pipeline.open_sources(_data_config(image_dir=str(root)))
  assert {split: len(source) for split, source in sources.items()} == dict.fromkeys(
      input_pipeline.SPLITS, 1)


def _bad_files(folder):
  """Files with image extensions that are not (whole) images, by what is wrong."""
  Image.fromarray(_image(64, 64)).save(folder / 'good.png')
  Image.fromarray(_image(64, 64)).save(folder / 'good.jpg')
  png, jpg = (folder / 'good.png').read_bytes(), (folder / 'good.jpg').read_bytes()
  files = {'text.jpg': b'this is not an image', 'empty.png': b'',
           'truncated.png': png[:len(png) // 2], 'truncated.jpg': jpg[:len(jpg) // 2],
           'garbled.png': png[:60] + bytes(len(png) - 60)}
  for name, data in files.items():
    (folder / name).write_bytes(data)
  return sorted(files)


def test_bad_image_files_raise_one_line_naming_the_file(tmp_path):
  for name in _bad_files(tmp_path):
    with pytest.raises(input_pipeline.BadImageError) as error:
      input_pipeline.load_image(str(tmp_path / name))
    message = str(error.value)
    assert isinstance(error.value, ValueError) and '\n' not in message
    assert message.startswith(f'{tmp_path / name}: cannot read this image (')


class _Broken(_Ids):
  """An _Ids source whose images in `bad` cannot be read."""

  def __init__(self, ids, bad):
    super().__init__(ids)
    self.bad = set(bad)

  def __getitem__(self, i):
    if i in self.bad:
      raise input_pipeline.BadImageError(f'image {i}: cannot read this image (test)')
    return super().__getitem__(i)


def test_bad_training_images_stop_training_or_are_replaced_by_the_next(caplog):
  a, b = _Broken(range(10), bad=[3, 9]), _Ids(range(100, 107))
  config = _data_config()
  batches = input_pipeline.UnpairedBatches(a, b, config, seed=3, global_batch=2)
  with pytest.raises(input_pipeline.BadImageError,
                     match=r'cannot read this image \(test\); .*skip_bad_images=True'):
    for step in range(5):  # One epoch reads every A image.
      batches.batch(step)
  config.skip_bad_images = True
  batches = input_pipeline.UnpairedBatches(a, b, config, seed=3, global_batch=2)
  with caplog.at_level('WARNING'):
    iterator = batches.iterate(0, num_workers=2)  # Threads share `skipped`.
    epoch = sum((_ids(next(iterator)['A']) for _ in range(5)), [])
  # 3 -> 4, and 9 wraps around to 0: the stream stays a function of (seed, step).
  assert sorted(epoch) == [0, 0, 1, 2, 4, 4, 5, 6, 7, 8]
  assert batches.skipped == {'trainA image 3', 'trainA image 9'}
  assert caplog.text.count('Skipping a bad training image') == 2
  again = input_pipeline.UnpairedBatches(a, b, config, seed=3, global_batch=2)
  np.testing.assert_array_equal(again.batch(4)['A'], batches.batch(4)['A'])
  all_bad = _Broken(range(3), bad=range(3))
  with pytest.raises(input_pipeline.BadImageError,
                     match='trainA: none of the 3 images of this shard can be read, e.g. image'):
    input_pipeline.UnpairedBatches(all_bad, b, config, seed=3, global_batch=1).batch(0)


def test_bad_files_of_a_folder_are_named_or_skipped(tmp_path):
  for split in input_pipeline.SPLITS:
    (tmp_path / split).mkdir()
    for i in range(3):
      Image.fromarray(_image(40, 40, seed=i)).save(tmp_path / split / f'{i}.png')
  bad = tmp_path / 'trainA' / '1.png'
  bad.write_text('not an image')
  (tmp_path / 'testA' / '0.png').write_bytes(b'')
  config = _data_config(image_dir=str(tmp_path))
  sources = input_pipeline.open_sources(config)
  batches = input_pipeline.UnpairedBatches(sources['trainA'], sources['trainB'], config,
                                           seed=0, global_batch=3)
  with pytest.raises(input_pipeline.BadImageError, match=f'^{bad}: cannot read this image'):
    batches.batch(0)  # One epoch: every A image, the bad one included.
  with pytest.raises(ValueError, match='testA/0.png: cannot read this image .*skip_bad_images'):
    input_pipeline.test_images(sources['testA'], config, 2)
  config.skip_bad_images = True
  batches = input_pipeline.UnpairedBatches(sources['trainA'], sources['trainB'], config,
                                           seed=0, global_batch=3)
  assert batches.batch(0)['A'].shape == (3, 32, 32, 3)
  assert batches.skipped == {str(bad)}
  # The first two test images that can be read: 1.png and 2.png.
  np.testing.assert_array_equal(
      input_pipeline.test_images(sources['testA'], config, 2),
      [input_pipeline.preprocess(sources['testA'][i], config, None) for i in (1, 2)])


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


@pytest.mark.parametrize('decoded_cache_mb', [0, 64])  # One run, and a sweep's shared store.
def test_eight_bit_images_go_to_the_device_as_their_pixels(tmp_path, decoded_cache_mb):
  """With pixels=True an 8-bit domain's batches are its uint8 pixels, which
  map (image_io.to_unit) to the very floats of the float batches; a domain
  with a 16-bit file, or a value range other than (0, 255), stays float."""
  for split in input_pipeline.SPLITS:
    os.makedirs(tmp_path / split)
    for i in range(3):
      Image.fromarray(_image(40, 44, seed=i)).save(tmp_path / split / f'{i}.png')
  Image.fromarray(_image(40, 44, seed=9)).save(tmp_path / 'trainA' / '3.jpg')
  sixteen_bit = _image(40, 44, seed=5)[..., :1].astype(np.uint16) * 257
  image_io.write(str(tmp_path / 'trainB' / '3.tif'), sixteen_bit)
  config = _data_config(image_dir=str(tmp_path))
  sources = input_pipeline.open_sources(config)

  def batches(pixels, config=config):
    first = input_pipeline.UnpairedBatches(sources['trainA'], sources['trainB'], config,
                                           seed=2, global_batch=2, pixels=pixels)
    return first.for_seeds([2], decoded_cache_mb)[0]
  sent, floats = batches(True), batches(False)
  assert sent.pixels == {'A': True, 'B': False} and floats.pixels == {'A': False, 'B': False}
  for step in range(4):
    got, expected = sent.batch(step), floats.batch(step)
    assert got['A'].dtype == np.uint8 and got['B'].dtype == np.float32
    np.testing.assert_array_equal(image_io.to_unit(got['A'], 0, 255), expected['A'])
    np.testing.assert_array_equal(got['B'], expected['B'])
  assert batches(True, _data_config(image_dir=str(tmp_path),
                                    value_range=(0, 100))).pixels['A'] is False
  # A file that turns 16-bit after the start is refused, never stacked with the rest.
  before = batches(True)
  for i in range(3):
    image_io.write(str(tmp_path / 'trainA' / f'{i}.png'), sixteen_bit)
  with pytest.raises(input_pipeline.BadImageError, match='^trainA: an image of step 0 is no '
                     'longer 8-bit'):
    before.batch(0)
