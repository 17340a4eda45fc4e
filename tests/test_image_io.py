"""Image files at full precision, channel conversion and the value rule."""

import numpy as np
from PIL import Image
import pytest
import tifffile

from configs import default
from cyclegan_jax import image_io
from cyclegan_jax.data import input_pipeline

RNG = np.random.default_rng(0)


@pytest.mark.parametrize('dtype', [np.uint8, np.uint16, np.int16, np.float32])
@pytest.mark.parametrize('channels', [1, 3])
def test_tiff_is_read_exactly(tmp_path, dtype, channels):
  if dtype == np.float32:
    pixels = RNG.random((5, 7, channels)).astype(np.float32)
  else:
    info = np.iinfo(dtype)
    pixels = RNG.integers(info.min, info.max, (5, 7, channels), endpoint=True).astype(dtype)
  path = str(tmp_path / 'x.tif')
  tifffile.imwrite(path, pixels[..., 0] if channels == 1 else pixels)
  image = image_io.read(path)
  assert image.dtype == dtype and image.shape == (5, 7, channels)
  np.testing.assert_array_equal(image, pixels)
  # Planar (channels first) and compressed files read the same.
  if channels == 3:
    tifffile.imwrite(str(tmp_path / 'planar.tif'), pixels.transpose(2, 0, 1),
                     photometric='rgb', planarconfig='separate')
    np.testing.assert_array_equal(image_io.read(str(tmp_path / 'planar.tif')), pixels)
  tifffile.imwrite(str(tmp_path / 'lzw.tif'), pixels[..., 0], compression='lzw')
  np.testing.assert_array_equal(image_io.read(str(tmp_path / 'lzw.tif')), pixels[..., :1])


def test_tiff_of_other_shapes_or_types_is_named(tmp_path):
  tifffile.imwrite(str(tmp_path / 'stack.tif'), np.zeros((4, 5, 6, 7), np.uint8))
  with pytest.raises(image_io.BadImageError, match=f'^{tmp_path / "stack.tif"}: cannot read '
                     r'this image \(a TIFF of shape \(4, 5, 6, 7\)'):
    image_io.read(str(tmp_path / 'stack.tif'))
  tifffile.imwrite(str(tmp_path / 'int32.tif'), np.zeros((4, 5), np.int32))
  with pytest.raises(image_io.BadImageError, match=f'^{tmp_path / "int32.tif"}: pixels of type '
                     'int32; expected 8-bit, 16-bit'):
    image_io.read(str(tmp_path / 'int32.tif'))


def test_luminance_is_pillows_grayscale():
  rgb = RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)
  gray = image_io.to_channels(rgb, 1, 'x')
  np.testing.assert_array_equal(gray[..., 0], np.asarray(Image.fromarray(rgb).convert('L')))
  # 16-bit: the same weights, at 16 bits (257 x an 8-bit colour: 257 x its gray, to rounding).
  gray16 = image_io.to_channels(rgb.astype(np.uint16) * 257, 1, 'x')
  assert gray16.dtype == np.uint16
  assert np.abs(gray16.astype(int) - gray.astype(int) * 257).max() <= 257
  floats = image_io.to_channels(rgb.astype(np.float32) / 255, 1, 'x')
  np.testing.assert_allclose(floats * 255, gray, atol=0.51)
  # Gray to RGB repeats; alpha is dropped.
  np.testing.assert_array_equal(image_io.to_channels(gray, 3, 'x'), np.repeat(gray, 3, -1))
  rgba = np.concatenate([rgb, np.full((16, 16, 1), 7, np.uint8)], -1)
  np.testing.assert_array_equal(image_io.to_channels(rgba, 3, 'x'), rgb)


def test_channels_a_file_cannot_give_are_one_line(tmp_path):
  path = str(tmp_path / 'rgb.tif')
  tifffile.imwrite(path, np.zeros((4, 4, 3), np.uint16))
  with pytest.raises(image_io.BadImageError, match=f'^{path}: has 3 channels, but the model '
                     r'takes 4 \(config.model.input_nc / output_nc\)'):
    input_pipeline.load_image(path, 4)
  five = str(tmp_path / 'five.tif')
  tifffile.imwrite(five, np.zeros((4, 4, 5), np.float32), planarconfig='contig')
  assert input_pipeline.load_image(five, 5).shape == (4, 4, 5)  # Its own count: fine.
  with pytest.raises(image_io.BadImageError, match='has 5 channels, but the model takes 3'):
    input_pipeline.load_image(five, 3)


def test_value_range_is_checked_and_named(tmp_path):
  path = str(tmp_path / 'ct.tif')
  tifffile.imwrite(path, np.array([[-1024, 0], [3071, 100]], np.int16))
  image = input_pipeline.load_image(path, 1, (-1024, 3071))
  np.testing.assert_allclose(image_io.to_unit(image, -1024, 3071)[..., 0],
                             [[-1, -1 + 2 * 1024 / 4095], [1, -1 + 2 * 1124 / 4095]], atol=1e-6)
  with pytest.raises(image_io.BadImageError, match=rf'^{path}: int16 pixels from -1024 to 3071, '
                     r'outside config.data.value_range=\(0, 4095\); set config.data.value_range'):
    input_pipeline.load_image(path, 1, (0, 4095))
  floats = str(tmp_path / 'f.tif')
  tifffile.imwrite(floats, np.array([[0.0, 2.5]], np.float32))
  with pytest.raises(image_io.BadImageError, match=r'float32 pixels from 0 to 2.5, outside the '
                     r'float32 default \(0, 1\)'):
    input_pipeline.load_image(floats, 1)
  assert input_pipeline.load_image(floats, 1, [0, 2.5]).max() == 2.5  # config.json: a list.


def test_the_value_rule_round_trips():
  # Every 16-bit value comes back exactly (within one 16-bit step: here none).
  values = np.arange(65536, dtype=np.uint16)
  unit = image_io.to_unit(values, 0, 65535)
  assert unit.min() == -1 and unit.max() == 1
  back = image_io.from_unit(unit, 0, 65535, np.uint16)
  assert np.abs(back.astype(int) - values).max() <= 1
  assert np.array_equal(image_io.from_unit(image_io.to_unit(np.arange(256, dtype=np.uint8),
                                                            0, 255), 0, 255, np.uint8),
                        np.arange(256))
  # uint8: the formula the code always had, bit for bit.
  y = np.linspace(-1.2, 1.2, 100_001, dtype=np.float32)
  old = np.asarray(np.clip((y + 1.0) * 127.5 + 0.5, 0, 255), np.uint8)
  np.testing.assert_array_equal(image_io.from_unit(y, 0, 255, np.uint8), old)
  pixels = np.arange(256, dtype=np.uint8)
  np.testing.assert_array_equal(image_io.to_unit(pixels, 0, 255),
                                pixels.astype(np.float32) / 127.5 - 1.0)
  # Explicit ranges, signed and float.
  np.testing.assert_array_equal(image_io.from_unit([-1.0, 1.0, 2.0], -1024, 3071, np.int16),
                                [-1024, 3071, 3071])
  np.testing.assert_allclose(image_io.from_unit([-1.0, 0.0, 1.0], 0.0, 1.0, np.float32),
                             [0, 0.5, 1])


@pytest.mark.parametrize('name,pixels', [
    ('gray8.png', RNG.integers(0, 256, (6, 5, 1), dtype=np.uint8)),
    ('rgb8.png', RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)),
    ('gray16.png', RNG.integers(0, 65536, (6, 5, 1), dtype=np.uint16)),
    ('rgb16.png', RNG.integers(0, 65536, (6, 5, 3), dtype=np.uint16)),
    ('float.tif', RNG.random((6, 5, 3)).astype(np.float32)),
    ('gray16.tiff', RNG.integers(0, 65536, (6, 5, 1), dtype=np.uint16))])
def test_write_then_read_is_exact(tmp_path, name, pixels):
  image_io.write(str(tmp_path / name), pixels)
  image = image_io.read(str(tmp_path / name))
  assert image.dtype == pixels.dtype
  np.testing.assert_array_equal(image, pixels)


def test_png_refuses_what_it_cannot_hold(tmp_path):
  with pytest.raises(ValueError, match=f'^{tmp_path / "x.png"}: PNG cannot hold 1-channel '
                     r'float32 pixels; write TIFF instead \(--output_format=tiff\)'):
    image_io.write(str(tmp_path / 'x.png'), np.zeros((4, 4, 1), np.float32))
  assert not (tmp_path / 'x.png').exists()
  assert image_io.output_extension(None, 'a/b.TIF') == '.tif'
  assert image_io.output_extension(None, 'a/b.png') == '.png'
  assert image_io.output_extension('tiff', 'a/b.png') == '.tif'
  with pytest.raises(ValueError, match="--output_format='jpg': expected png or tiff"):
    image_io.output_extension('jpg', 'a/b.png')


def test_preprocess_of_sixteen_bit_and_many_channels():
  """16-bit and N-channel images are resampled per channel in float, and one
  random crop and flip serve all channels."""
  config = default.get_config().data
  config.load_size, config.crop_size = 36, 32
  gray8 = RNG.integers(0, 256, (40, 48, 1), dtype=np.uint8)
  out8 = input_pipeline.preprocess(gray8, config, np.random.default_rng(3))
  out16 = input_pipeline.preprocess(gray8.astype(np.uint16) * 257, config,
                                    np.random.default_rng(3))
  floats = input_pipeline.preprocess(gray8.astype(np.float32) / 255, config,
                                     np.random.default_rng(3))
  assert out8.shape == out16.shape == floats.shape == (32, 32, 1)
  # 257 x / 65535 = x / 255: the 16-bit image is resampled in float, not
  # rounded to 8 bits on the way; the 8-bit one in Pillow's 8-bit arithmetic
  # (whose bicubic differs from its float one by a few levels on noise).
  np.testing.assert_allclose(out16, floats, atol=1e-5)
  assert np.abs(out8 - out16).max() < 8 / 127.5
  five = np.concatenate([gray8.astype(np.float32) / 255] * 5, axis=-1)
  out5 = input_pipeline.preprocess(five, config, np.random.default_rng(3))
  assert out5.shape == (32, 32, 5)
  for c in range(5):  # Every channel got the same crop and flip.
    np.testing.assert_allclose(out5[..., c], floats[..., 0], atol=1e-6)


def test_is_eight_bit_says_what_read_will_give_from_the_header(tmp_path):
  rgb = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
  Image.fromarray(rgb).save(tmp_path / 'photo.jpg')
  Image.fromarray(rgb).save(tmp_path / 'photo.bmp')
  Image.fromarray(rgb).save(tmp_path / 'photo.webp')
  Image.fromarray(rgb).convert('P').save(tmp_path / 'palette.png')
  Image.fromarray(rgb).convert('1').save(tmp_path / 'bilevel.png')
  for name, pixels in [('rgb8.png', rgb), ('gray16.png', rgb[..., :1].astype(np.uint16) * 257),
                       ('rgb16.png', rgb.astype(np.uint16)), ('rgb8.tif', rgb),
                       ('gray16.tif', rgb[..., :1].astype(np.uint16)),
                       ('float.tif', rgb.astype(np.float32) / 255)]:
    image_io.write(str(tmp_path / name), pixels)
  for path in sorted(tmp_path.iterdir()):
    assert image_io.is_eight_bit(str(path)) == (image_io.read(str(path)).dtype == np.uint8), path
  assert [p.name for p in sorted(tmp_path.iterdir()) if image_io.is_eight_bit(str(p))] == [
      'bilevel.png', 'palette.png', 'photo.bmp', 'photo.jpg', 'photo.webp', 'rgb8.png',
      'rgb8.tif']
  (tmp_path / 'broken.png').write_bytes(b'not a png')  # Unknown: not 8-bit.
  assert not image_io.is_eight_bit(str(tmp_path / 'broken.png'))
  assert not image_io.is_eight_bit(str(tmp_path / 'missing.tif'))
