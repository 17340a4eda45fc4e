"""Tiled translation (tiling.py, tiled_io.py): tiles with whole-image
statistics equal the untiled translation, for ResNet and U-Net generators
on odd sizes; TIFFs read and written a window at a time; the refusals."""

import errno
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tifffile

from cyclegan_jax import configuration
from cyclegan_jax import generation
from cyclegan_jax import image_io
from cyclegan_jax import inference
from cyclegan_jax import memory
from cyclegan_jax import models
from cyclegan_jax import tiled_io
from cyclegan_jax import tiling
from cyclegan_jax import translate

CONV = models.platform_conv()
GENERATORS = {
    'resnet': models.ResnetGenerator(n_blocks=2, ngf=8, conv=CONV),
    # Batch norm (its scale and bias), test-time dropout (masks of the whole
    # image) and CUT's blur layers, in one network.
    'resnet_batch_dropout_antialias': models.ResnetGenerator(
        n_blocks=1, ngf=4, norm='batch', dropout=True, dropout_at_test=True, antialias=True,
        antialias_up=True, conv=CONV),
    'unet': models.UnetGenerator(num_downs=5, ngf=4, conv=CONV),
}


def _params(generator):
  multiple = models.generator_multiple(generator)
  return generator.init({'params': jax.random.PRNGKey(1), 'dropout': jax.random.PRNGKey(2)},
                        jnp.zeros((1, multiple, multiple, 3)), train=False)['params']


def _untiled(generator, params, image):
  """What translate does without tiles: reflect-pad to the multiple, crop back."""
  multiple = models.generator_multiple(generator)
  h, w = image.shape[:2]
  padded = np.pad(image, ((0, -h % multiple), (0, -w % multiple), (0, 0)), mode='reflect')
  return np.asarray(generation.generate(generator, params, padded[None]))[0, :h, :w]


def _image(h, w, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (h, w, 3)).astype(np.float32)


@pytest.mark.parametrize('name, size, tile', [
    ('resnet', (101, 93), 80),  # The smallest tile: 16-pixel cores, 42 tiles.
    ('resnet_batch_dropout_antialias', (113, 101), 96),
    ('unet', (301, 259), 224),  # Odd sizes padded to 320x288: 90 tiles.
])
def test_tiles_equal_the_untiled_translation(name, size, tile):
  generator = GENERATORS[name]
  params = _params(generator)
  image = _image(*size)
  assert len(tiling.plan(generator, *size, tile)) > 4
  expected = _untiled(generator, params, image)
  got = tiling.translate_array(generator, params, image, tile)
  error = np.abs(got - expected)
  assert error.max() < 1e-5, error.max()  # Float rounding: 1e-6 here.
  grey = lambda y: image_io.from_unit(y, 0, 255, np.uint8).astype(int)
  assert np.abs(grey(got) - grey(expected)).max() <= 1
  assert expected.std() > 0.05  # A translation with contrast, not a constant.


@pytest.mark.parametrize('name, size, tile', [('resnet', (101, 93), 96),
                                             ('unet', (261, 197), 224)])
def test_passes_of_the_one_window_program_reach_the_whole_image_statistics(name, size, tile):
  """window_with_statistics driven from outside, pass after pass over the
  tiles (as the exported ONNX tile program is, docs/export.md): after k
  passes layers 0..k-1 have the whole image's statistics, after one pass per
  layer all do, and the tiles' cores are then the untiled translation."""
  generator = GENERATORS[name]
  params = _params(generator)
  image = _image(*size)
  multiple = models.generator_multiple(generator)
  x = np.pad(image, ((0, -size[0] % multiple), (0, -size[1] % multiple), (0, 0)), mode='reflect')
  layers = tiling.norm_layers(generator, params, 3)
  tiled = tiling.TiledTranslation(generator, params, *size, 3, tile,
                                  lambda y0, y1, x0, x1: x[y0:y1, x0:x1])
  assert len(tiled.tiles) > 2 and len(layers) == len(tiled._norm_channels)
  exact = [np.concatenate([np.asarray(s[i]) for s in tiled.statistics()]) for i in (0, 1)]
  program = jax.jit(lambda p, w, m, v, c: tiling.window_with_statistics(generator, p, layers,
                                                                        w, m, v, c))

  def run(t, mean, var):
    (y0, y1, x0, x1), (c0, c1, d0, d1) = t.window, t.core
    core = np.array([c0 - y0, c1 - y0, d0 - x0, d1 - x0], np.int32)
    return program(params, x[None, y0:y1, x0:x1], mean, var, core)

  offsets = np.cumsum([0] + [c for c, _ in layers])
  mean, var = np.zeros_like(exact[0]), np.ones_like(exact[1])  # Any start converges.
  for k in range(len(layers)):
    n, total, m2 = (np.float64(0),) * 3
    for t in tiled.tiles:
      _, count, core_mean, core_m2 = run(t, mean, var)
      n, total, m2 = tiling._merge(  # pylint: disable=protected-access
          (n, total, m2), (np.repeat(np.asarray(count), [c for c, _ in layers]), core_mean,
                           core_m2))
    mean, var = np.asarray(total, np.float32), np.asarray(m2 / n, np.float32)
    done = offsets[k + 1]  # Layers 0..k are the whole image's now.
    np.testing.assert_allclose(mean[:done], exact[0][:done], atol=1e-5)
    np.testing.assert_allclose(var[:done], exact[1][:done], rtol=1e-4, atol=1e-6)
    if k == 0:  # The last layer's are not yet: the start mattered.
      assert np.abs(var[offsets[-2]:] - exact[1][offsets[-2]:]).max() > 1e-3
  out = np.empty(x.shape, np.float32)
  for t in tiled.tiles:
    y = np.asarray(run(t, mean, var)[0])[0]
    (y0, _, x0, _), (c0, c1, d0, d1) = t.window, t.core
    out[c0:c1, d0:d1] = y[c0 - y0:c1 - y0, d0 - x0:d1 - x0]
  expected = _untiled(generator, params, image)
  assert np.abs(out[:size[0], :size[1]] - expected).max() < 1e-5


def test_tiles_overlapping_less_than_the_receptive_radius_show(monkeypatch):
  """The check above can fail: with the overlap 12 pixels short of the
  receptive radius, the tiles' edges differ from the untiled translation."""
  generator = GENERATORS['resnet']
  params = _params(generator)
  image = _image(101, 93)
  radius = models.receptive_radius
  monkeypatch.setattr(models, 'receptive_radius', lambda g: radius(g) - 12)
  error = np.abs(tiling.translate_array(generator, params, image, 80)
                 - _untiled(generator, params, image))
  assert error.max() > 1e-2, error.max()


def test_each_tile_normalised_by_itself_would_show_seams(monkeypatch):
  """What whole-image statistics are for: the same tiles with each tile's own
  statistics (an untiled translation per window) differ by many grey levels."""
  generator = GENERATORS['resnet']
  params = _params(generator)
  image = _image(101, 77)
  expected = _untiled(generator, params, image)
  for tile in tiling.plan(generator, 101, 77, 80):
    y0, y1, x0, x1 = tile.window
    own = np.asarray(generation.generate(generator, params, image[None, y0:y1, x0:x1]))[0]
    c = tile.core
    core = own[c[0] - y0:min(c[1], 101) - y0, c[2] - x0:min(c[3], 77) - x0]
    if np.abs(core - expected[c[0]:c[1], c[2]:c[3]]).max() * 127.5 > 2:
      return
  pytest.fail('no tile differed')


def test_thumbnail_statistics_are_exact_for_small_images_and_approximate_otherwise(
    monkeypatch):
  generator = GENERATORS['resnet']
  params = _params(generator)
  rows = np.linspace(-1, 1, 101, dtype=np.float32)[:, None, None]
  image = np.broadcast_to(rows, (101, 77, 3)) * np.array([1, 0.5, -0.5], np.float32)
  expected = _untiled(generator, params, image)
  # An image no larger than the thumbnail is its own thumbnail.
  same = tiling.translate_array(generator, params, image, 80, 'thumbnail')
  assert np.abs(same - expected).max() < 1e-5
  # A quarter of the size: other statistics, so another translation (how far
  # from the exact one depends on the model: measured in docs/translation.md).
  monkeypatch.setattr(tiling, 'THUMBNAIL_SIZE', 32)
  approx = tiling.translate_array(generator, params, image, 80, 'thumbnail')
  assert np.isfinite(approx).all() and np.abs(approx - expected).max() > 1e-2


def test_a_tile_below_the_minimum_is_refused_naming_it():
  generator = GENERATORS['resnet']  # Receptive radius 31: 2 x 32 + 16 pixels.
  assert tiling.min_tile(generator) == 80
  with pytest.raises(ValueError, match=r'^--tile=64: this generator needs tiles of at least 80 '
                                       r'pixels \(its receptive radius 31'):
    tiling.plan(generator, 100, 100, 64)
  with pytest.raises(ValueError, match="--tile_stats='tiny': expected one of exact, thumbnail"):
    tiling.TiledTranslation(generator, None, 100, 100, 3, 80, None, 'tiny')


def test_receptive_radii_of_the_shipped_generators():
  """The table in docs/translation.md: receptive radius, overlap, smallest tile."""
  table = [(models.ResnetGenerator(n_blocks=9), 87, 88, 192),
           (models.ResnetGenerator(n_blocks=6), 63, 64, 144),
           (models.ResnetGenerator(n_blocks=9, antialias=True, antialias_up=True), 93, 96, 208),
           (models.ResnetGenerator(n_blocks=3), 39, 40, 96),
           (models.ResnetGenerator(n_blocks=3, antialias_up=True), 42, 44, 104),
           (models.UnetGenerator(num_downs=7), 381, 384, 896),
           (models.UnetGenerator(num_downs=8), 765, 768, 1792)]
  for generator, radius, overlap, smallest in table:
    assert (models.receptive_radius(generator), tiling.halo(generator),
            tiling.min_tile(generator)) == (radius, overlap, smallest), generator
  assert tiling.core_size(models.ResnetGenerator(n_blocks=9), 1024) == 848


def test_reflect_indices_match_numpy_reflect_padding():
  for size in (1, 2, 5):
    padded = np.pad(np.arange(size), (0, 13), mode='reflect')
    np.testing.assert_array_equal(tiling.reflect_indices(0, size + 13, size), padded)


@pytest.fixture
def restored_generator(one_step_workdir):
  return inference.restore(one_step_workdir, 'AtoB').generator


def _write_tiff(path, image, **kwargs):
  tifffile.imwrite(path, image[..., 0] if image.shape[-1] == 1 else image,
                   photometric='rgb' if image.shape[-1] == 3 else 'minisblack', **kwargs)


@pytest.mark.parametrize('channels, layout', [(3, {'tile': (32, 32)}),
                                              (1, {'rowsperstrip': 8, 'compression': 'zlib'})])
def test_a_16_bit_tiff_is_read_and_written_a_window_at_a_time(
    one_step_workdir, restored_generator, tmp_path, monkeypatch, channels, layout):
  """A 16-bit BigTIFF, tiled or in strips, gray (translated as RGB, as
  untiled) or colour: no read is the whole image, the output is a tiled TIFF
  whose tiles are the cores, and it equals the untiled translation within one
  level of 65535."""
  rng = np.random.default_rng(3)
  image = rng.integers(0, 65536, (150, 131, channels), dtype=np.uint16)
  inputs, outputs = tmp_path / 'in', tmp_path / 'out'
  inputs.mkdir()
  _write_tiff(str(inputs / 'big.tif'), image, bigtiff=True, **layout)
  reads = []
  window = tiled_io._TiffWindows._window  # pylint: disable=protected-access

  def counted(self, y0, y1, x0, x1):
    reads.append((y1 - y0) * (x1 - x0))
    return window(self, y0, y1, x0, x1)

  monkeypatch.setattr(tiled_io._TiffWindows, '_window', counted)  # pylint: disable=protected-access
  written = translate.translate_folder(one_step_workdir, str(inputs), str(outputs), 'AtoB',
                                       tile=96)
  assert written == [str(outputs / 'big.tif')]
  assert reads and max(reads) < 150 * 131 / 2, max(reads)
  with tifffile.TiffFile(written[0]) as tiff:
    page = tiff.pages[0]
    assert page.is_tiled and (page.tilelength, page.tilewidth) == (32, 32)  # 96 - 2 x 32.
    got = tiff.asarray()
  expected = generation.translate_image(restored_generator.module, restored_generator.params,
                                        image_io.to_channels(image, 3, 'x'))
  assert got.shape == expected.shape and got.dtype == np.uint16
  assert np.abs(got.astype(int) - expected).max() <= 1


def test_a_tiff_in_one_block_is_read_whole_with_a_note(one_step_workdir, tmp_path, monkeypatch,
                                                       caplog):
  image = np.random.default_rng(4).integers(0, 256, (90, 70, 3), dtype=np.uint8)
  inputs = tmp_path / 'in'
  inputs.mkdir()
  _write_tiff(str(inputs / 'one.tif'), image, rowsperstrip=90, compression='zlib')
  monkeypatch.setattr(tiled_io, 'WHOLE_READ_NOTE_PIXELS', 0)
  with caplog.at_level(logging.WARNING):
    translate.translate_folder(one_step_workdir, str(inputs), str(tmp_path / 'out'),
                               tile=80, output_format='png')
  assert any('one.tif: stored as one block (neither tiled nor in strips), so it cannot be read '
             'a window at a time; it is read whole instead' in r.getMessage()
             for r in caplog.records)
  assert os.listdir(tmp_path / 'out') == ['one.png']


def test_a_full_disk_removes_the_partial_tiff_and_names_it(tmp_path):
  path = str(tmp_path / 'out.tif')

  def tiles():
    yield np.zeros((16, 16, 3), np.uint8)
    raise OSError(errno.ENOSPC, 'No space left on device')

  with pytest.raises(OSError, match=rf'^{path}: cannot be written \(No space left on device\); '
                                    'the partial file was removed'):
    tiled_io.write_tiff_tiles(path, 40, 40, 3, np.uint8, (16, 16), tiles())
  assert not os.path.exists(path)


def test_an_image_too_large_whole_is_tiled_automatically(one_step_workdir, restored_generator,
                                                         tmp_path, monkeypatch, caplog):
  """With the memory available between what an 80-pixel tile's program
  needs and what the whole image's needs, translate tiles it by itself and
  says so in one line; the output is the untiled one."""
  generator, params = restored_generator.module, restored_generator.params
  image = np.random.default_rng(5).integers(0, 256, (180, 150, 3), dtype=np.uint8)
  expected = generation.translate_image(generator, params, image)  # Before the limit.

  def need(shape):
    compiled = generation.generate.lower(generator, params,
                                         jax.ShapeDtypeStruct(shape, np.float32)).compile()
    return memory.compiled_memory_bytes(compiled)

  tile_need, whole_need = need((1, 80, 80, 3)), need((1, 180, 152, 3))
  assert tile_need < whole_need / 2
  monkeypatch.setattr(memory, 'available_bytes',
                      lambda device=None: (tile_need + whole_need) // 2)
  generation._compiled_generate.clear()  # pylint: disable=protected-access
  inputs = tmp_path / 'in'
  inputs.mkdir()
  image_io.write(str(inputs / 'a.png'), image)
  with caplog.at_level(logging.WARNING):
    translate.translate_folder(one_step_workdir, str(inputs), str(tmp_path / 'out'))
  generation._compiled_generate.clear()  # pylint: disable=protected-access
  assert [r.getMessage() for r in caplog.records if 'tiles' in r.getMessage()] == [
      f'{inputs / "a.png"}: a 150x180 image does not fit in memory whole; translating it in '
      '80-pixel tiles (exact statistics)']
  got = image_io.read(str(tmp_path / 'out' / 'a.png'))
  assert np.abs(got.astype(int) - expected).max() <= 1
  assert configuration.load(one_step_workdir).model.generator == 'resnet_2blocks'


def _unsb_step():
  """UNSB's generator as tiling runs it: one step G(x, t, z), z fixed."""
  from configs import tiny_unsb  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import families  # pylint: disable=import-outside-toplevel
  generator = families.unsb.create_generators(tiny_unsb.get_config().model)['gen']
  params = generator.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                          np.zeros(1, np.int32), np.zeros((1, 32), np.float32))['params']
  params = jax.tree.map(lambda p: p * 30 if p.ndim > 1 else p, params)  # Contrast to compare.
  step, step_params = tiling.one_program(generator, params)
  step_params['z'] = jax.random.normal(jax.random.PRNGKey(3), step_params['z'].shape)
  return step, step_params


@pytest.mark.parametrize('name', ['resnet', 'resnet_batch_antialias', 'unet', 'unsb_step'])
def test_sizes_in_one_bucket_share_one_program_and_translate_as_untiled(name):
  """translate_image_in_bucket (the demo's --demo_buckets): images of three
  sizes in one 64-pixel bucket run one compiled program on a reflected
  canvas, and each translation is the untiled one up to float rounding, the
  bottom and right edges included (each padding layer sees past the image's
  edge what the untiled generator's padding puts there)."""
  if name == 'unsb_step':
    generator, params = _unsb_step()
  elif name == 'resnet_batch_antialias':  # Batch norm, CUT's blur layers.
    generator = models.ResnetGenerator(n_blocks=1, ngf=4, norm='batch', antialias=True,
                                       antialias_up=True, conv=CONV)
    params = _params(generator)
  else:
    generator = GENERATORS[name]
    params = _params(generator)
  bucket = 64 if name != 'unet' else 128  # The U-Net's multiple is 32 (num_downs 5).
  sizes = [(37, 51), (64, 33), (41, 64)] if name != 'unet' else [(101, 70), (128, 97)]
  before = len(tiling._compiled_canvases)  # pylint: disable=protected-access
  for height, width in sizes:
    image = image_io.from_unit(_image(height, width, seed=height), 0, 255, np.uint8)
    expected = generation.translate_image(generator, params, image).astype(int)
    got = tiling.translate_image_in_bucket(generator, params, image, bucket).astype(int)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1, (height, width)
    assert (got != expected).mean() < 0.01
    assert expected.std() > 5  # A translation with contrast, not a constant.
  assert len(tiling._compiled_canvases) == before + 1  # pylint: disable=protected-access


def test_the_canvas_program_without_its_edge_handling_would_differ():
  """The check above can fail: statistics over the whole canvas, or layers
  padding at the canvas's edge instead of the image's, change the image."""
  generator, params = GENERATORS['resnet'], _params(GENERATORS['resnet'])
  image = _image(37, 51)
  canvas = image[np.ix_(tiling.reflect_indices(0, 64, 37), tiling.reflect_indices(0, 64, 51))]
  expected = _untiled(generator, params, image)
  whole_canvas = np.asarray(generation.generate(generator, params, canvas[None]))[0, :37, :51]
  assert np.abs(whole_canvas - expected).max() > 0.1
  region = np.array([0, 40, 0, 52], np.int32)
  got = np.asarray(tiling._generate_on_canvas(  # pylint: disable=protected-access
      generator, params, canvas[None], region))[0, :37, :51]
  assert np.abs(got - expected).max() < 1e-4


def test_a_bucket_off_the_generator_multiple_is_refused_naming_it():
  with pytest.raises(ValueError, match=r'^--demo_buckets=30: expected 0 \(off\) or a positive '
                                       r'multiple of 4'):
    tiling.bucket_size(GENERATORS['resnet'], 37, 51, 30)


def test_unsb_in_a_bucket_draws_the_untiled_noise_at_every_nfe():
  """A generator that translates in steps from noise (UNSB): on the canvas,
  step by step, with the bridge's noise drawn at the image's padded size as
  untiled, so each NFE's translation is the untiled one within a grey level
  (tau large enough that the noise shows: another seed differs); one
  program per step serves every NFE and seed."""
  from configs import tiny_unsb  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import families  # pylint: disable=import-outside-toplevel
  generator = families.unsb.create_generators(tiny_unsb.get_config().model)['gen']
  params = generator.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                          np.zeros(1, np.int32), np.zeros((1, 32), np.float32))['params']
  params = jax.tree.map(lambda p: p * 30 if p.ndim > 1 else p, params)
  image = image_io.from_unit(_image(37, 51, seed=4), 0, 255, np.uint8)
  before = len(tiling._compiled_canvases)  # pylint: disable=protected-access
  for nfe in (1, 3):
    for seed in (2, 5):
      module = generator.clone(nfe=nfe, seed=seed, tau=0.5)
      expected = generation.translate_image(module, params, image).astype(int)
      got = tiling.translate_image_in_bucket(module, params, image, 64).astype(int)
      assert np.abs(got - expected).max() <= 1, (nfe, seed)
      assert expected.std() > 5
    if nfe == 3:
      other = generation.translate_image(module.clone(seed=2), params, image).astype(int)
      assert np.abs(other - expected).mean() > 1  # The noise shows.
  assert len(tiling._compiled_canvases) == before + 3  # pylint: disable=protected-access
