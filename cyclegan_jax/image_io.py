"""Image files <-> arrays at full precision, and the one rule that maps pixel
values to the generators' [-1, 1] and back.

Read: 8-bit files of any kind Pillow opens (EXIF orientation applied);
16-bit PNG (gray or colour) with imagecodecs, since Pillow keeps only the
high byte of a 16-bit colour PNG; TIFF (8-bit, 16-bit, float; gray or with
channels) with tifffile. Arrays keep the file's pixel type: uint8, uint16,
int16 or float32.

The value rule: a pixel type's range (low, high) maps linearly onto
[-1, 1]: config.data.value_range when set, else the full range of the type
(uint8 0-255, uint16 0-65535, int16 -32768-32767; float32 0-1). Translations
are mapped back through the same range and rounded to the input's type.

Paths may be on Cloud Storage (gs://...): a remote file is read whole into
memory and decoded there; a remote output is encoded in memory and created
whole by its upload (storage.write_bytes_atomically).
"""

import builtins
import io
import os

import numpy as np
from PIL import Image, ImageOps

from cyclegan_jax import storage

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff')
TIFF_EXTENSIONS = ('.tif', '.tiff')

# The range of each pixel type when config.data.value_range is empty.
TYPE_RANGES = {np.dtype(np.uint8): (0, 255), np.dtype(np.uint16): (0, 65535),
               np.dtype(np.int16): (-32768, 32767), np.dtype(np.float32): (0.0, 1.0)}
# Pillow's 16-bit grayscale modes ('I' holds 16-bit PNGs in older Pillows).
_SIXTEEN_BIT_MODES = ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N')
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


class BadImageError(ValueError):
  """An image file that cannot be decoded, or whose pixels do not fit the config."""


def _one_line(error: Exception) -> str:
  return ' '.join(str(error).split()) or type(error).__name__


def _png_bit_depth(data: bytes) -> int:
  """The bit depth in a PNG's header (byte 24, inside IHDR); 0 for other files."""
  return data[24] if len(data) > 24 and data.startswith(_PNG_SIGNATURE) else 0


def _read_tiff(file) -> np.ndarray:
  """The first image of a TIFF (a local path, or a file object)."""
  import tifffile  # pylint: disable=import-outside-toplevel
  with tifffile.TiffFile(file) as tiff:
    series = tiff.series[0]
    axes, image = series.axes, series.asarray()
  if axes in ('YX', 'YXS'):
    return image.reshape(*image.shape[:2], -1)
  if axes in ('SYX', 'CYX', 'QYX') and image.ndim == 3:  # Planar: channels first.
    return image.transpose(1, 2, 0)
  raise ValueError(f'a TIFF of shape {image.shape} (axes {axes}); expected one 2-D image, '
                   'gray or with channels')


def _read_pillow(data: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as image:
    # Decode every pixel here: Image.open reads only the header, so a
    # truncated file fails only now ('image file is truncated').
    image.load()
    image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT_MODES:
      array = np.asarray(image)
      if array.min() < 0 or array.max() > 65535:
        raise ValueError(f'32-bit integer pixels ({array.min()} to {array.max()}); expected '
                         '8 or 16 bits')
      return array.astype(np.uint16)[..., None]
    if image.mode == 'F':
      return np.asarray(image, np.float32)[..., None]
    if image.mode not in ('L', 'LA', 'RGB', 'RGBA'):  # Palette, 1-bit, CMYK, ...
      image = image.convert('RGBA' if 'transparency' in image.info or 'A' in image.mode
                            else 'RGB')
    array = np.asarray(image)
    return array if array.ndim == 3 else array[..., None]


# Formats whose files Pillow decodes only to 8-bit pixels.
_EIGHT_BIT_EXTENSIONS = ('.jpg', '.jpeg', '.bmp', '.webp')


def is_eight_bit(path: str) -> bool:
  """Whether `read` gives uint8 pixels for this file, from its name or header
  alone (JPEG, BMP, WebP; a PNG of bit depth 8 or less; a TIFF of uint8
  samples). False for a file whose header does not say (it is read in full
  later, and errors are reported then)."""
  lower = path.lower()
  if lower.endswith(_EIGHT_BIT_EXTENSIONS):
    return True
  try:
    with storage.open(path, 'rb') as f:
      if lower.endswith(TIFF_EXTENSIONS):
        import tifffile  # pylint: disable=import-outside-toplevel
        with tifffile.TiffFile(f) as tiff:
          return tiff.series[0].dtype == np.uint8
      header = f.read(26)
  except Exception:  # pylint: disable=broad-exception-caught
    return False
  return header.startswith(_PNG_SIGNATURE) and 0 < _png_bit_depth(header) <= 8


def read(path: str) -> np.ndarray:
  """An image file -> (H, W, C) array of its own pixel type (uint8, uint16,
  int16 or float32). BadImageError, naming the file, for anything that does
  not decode completely (a truncated file included) or has another type."""
  remote = storage.is_remote(path)
  try:
    if path.lower().endswith(TIFF_EXTENSIONS):
      image = _read_tiff(io.BytesIO(storage.read_bytes(path)) if remote else path)
    else:
      # Read once: the PNG header picks the decoder.
      if remote:
        data = storage.read_bytes(path)
      else:
        with builtins.open(path, 'rb') as f:
          data = f.read()
      if _png_bit_depth(data) == 16:
        import imagecodecs  # pylint: disable=import-outside-toplevel
        image = imagecodecs.png_decode(data)
        image = image.reshape(*image.shape[:2], -1)
      else:
        image = _read_pillow(data)
  except Exception as e:  # Decoders raise OSError, SyntaxError, ValueError, their own...
    raise BadImageError(f'{path}: cannot read this image ({_one_line(e)})') from e
  if image.dtype in (np.float16, np.float64):
    image = image.astype(np.float32)
  if image.dtype not in TYPE_RANGES:
    raise BadImageError(f'{path}: pixels of type {image.dtype}; expected 8-bit, 16-bit '
                        '(unsigned or signed) or float32')
  return image


def _luminance(rgb: np.ndarray) -> np.ndarray:
  """ITU-R 601-2 luma, L = 0.299 R + 0.587 G + 0.114 B: Pillow's convert('L')
  (the official code's grayscale), whose fixed-point sums integer types
  follow exactly."""
  if rgb.dtype == np.float32:
    return (rgb[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
  r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
  return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(rgb.dtype)[..., None]


def to_channels(image: np.ndarray, channels: int, where: str) -> np.ndarray:
  """`image` with `channels` channels, as the official code converts: 1 from
  colour by luminance, 3 from gray by repeating it; an alpha channel is
  dropped. Other counts must be the file's own (BadImageError otherwise)."""
  have = image.shape[-1]
  if have == channels:
    return image
  if channels == 3 and have in (1, 2):  # Gray (with alpha): convert('RGB').
    return np.repeat(image[..., :1], 3, axis=-1)
  if channels == 3 and have == 4:  # RGBA: convert('RGB') drops alpha.
    return image[..., :3]
  if channels == 1 and have in (3, 4):  # Colour: convert('L').
    return _luminance(image)
  if channels == 1 and have == 2:  # Gray with alpha.
    return image[..., :1]
  raise BadImageError(f'{where}: has {have} channels, but the model takes {channels} '
                      '(config.model.input_nc / output_nc); only gray and colour images are '
                      'converted between 1 and 3 channels')


def value_range(configured, dtype) -> tuple[float, float]:
  """(low, high) that map to (-1, 1): config.data.value_range, or the
  pixel type's full range (TYPE_RANGES) when that is empty."""
  if configured is not None and len(configured):
    low, high = configured
    return float(low), float(high)
  return TYPE_RANGES[np.dtype(dtype)]


def check_value_range(image: np.ndarray, configured, where: str) -> None:
  """BadImageError when a pixel lies outside the range its type maps from."""
  low, high = value_range(configured, image.dtype)
  lo, hi = image.min(), image.max()
  if lo < low or hi > high or np.isnan(lo) or np.isnan(hi):
    setting = (f'config.data.value_range={tuple(configured)}' if configured is not None
               and len(configured) else f'the {image.dtype} default ({low:g}, {high:g})')
    raise BadImageError(f'{where}: {image.dtype} pixels from {lo:g} to {hi:g}, outside '
                        f'{setting}; set config.data.value_range to the range of your data '
                        '(low, high)')


def to_unit(image: np.ndarray, low: float, high: float) -> np.ndarray:
  """Pixels in [low, high] -> float32 in [-1, 1]. For (0, 255): x / 127.5 - 1."""
  half = np.float32(0.5 * (high - low))
  return np.asarray(image, np.float32) / half - np.float32((high + low) / (high - low))


def from_unit(values, low: float, high: float, dtype) -> np.ndarray:
  """[-1, 1] floats -> pixels of `dtype` in [low, high] (to_unit's inverse),
  integers rounded to nearest. For uint8 (0, 255): clip((y + 1) * 127.5 + 0.5)."""
  half = np.float32(0.5 * (high - low))
  x = (np.asarray(values, np.float32) + np.float32((high + low) / (high - low))) * half
  dtype = np.dtype(dtype)
  if dtype == np.float32:
    return np.clip(x, low, high).astype(np.float32)
  return np.floor(np.clip(x + np.float32(0.5), low, high)).astype(dtype)


def output_extension(output_format: str | None, input_path: str) -> str:
  """'.png' or '.tif' for the translation of an input: `output_format`
  ('png' | 'tiff') when given, else TIFF for a TIFF input and PNG otherwise
  (which holds every type a non-TIFF file is read as: 8 and 16 bits)."""
  if output_format is None:
    return '.tif' if input_path.lower().endswith(TIFF_EXTENSIONS) else '.png'
  if output_format not in ('png', 'tiff'):
    raise ValueError(f'--output_format={output_format!r}: expected png or tiff')
  return '.png' if output_format == 'png' else '.tif'


def write(path: str, image: np.ndarray) -> None:
  """Writes an (H, W, C) array at its own pixel type: '.tif'/'.tiff' with
  tifffile (any type and channels); PNG (1 or 3 channels) with Pillow for
  8 bits and imagecodecs for 16; ValueError, naming the file, for other
  types or channel counts in a PNG."""
  if not path.lower().endswith(TIFF_EXTENSIONS) and (
      image.dtype not in (np.uint8, np.uint16) or image.shape[-1] not in (1, 3)):
    raise ValueError(f'{path}: PNG cannot hold {image.shape[-1]}-channel {image.dtype} '
                     'pixels; write TIFF instead (--output_format=tiff)')
  image = np.ascontiguousarray(image[..., 0] if image.shape[-1] == 1 else image)
  if storage.is_remote(path):  # Encoded here, uploaded whole.
    encoded = io.BytesIO()
    _encode(encoded, image, path)
    storage.write_bytes_atomically(path, encoded.getvalue())
  else:
    _encode(path, image, path)


def _encode(file, image: np.ndarray, path: str) -> None:
  """Writes `image` ((H, W) or (H, W, C), contiguous) to `file` (a local path
  or a file object) in the format `path`'s extension names."""
  if path.lower().endswith(TIFF_EXTENSIONS):
    import tifffile  # pylint: disable=import-outside-toplevel
    tifffile.imwrite(file, image, photometric='rgb' if image.ndim == 3 and
                     image.shape[-1] == 3 else 'minisblack')
  elif image.dtype == np.uint16:
    import imagecodecs  # pylint: disable=import-outside-toplevel
    if isinstance(file, str):
      with builtins.open(file, 'wb') as f:
        f.write(imagecodecs.png_encode(image))
    else:
      file.write(imagecodecs.png_encode(image))
  elif isinstance(file, str):
    Image.fromarray(image).save(file)
  else:  # A file object has no name to take the format from.
    Image.fromarray(image).save(file, format=Image.registered_extensions().get(
        os.path.splitext(path)[1].lower(), 'PNG'))


def write_png_atomically(path: str, image: np.ndarray) -> None:
  """An 8-bit gray or RGB image as a PNG that appears whole or not at all
  (storage.write_bytes_atomically: a local rename, an object's upload), for
  the views (sample grids, pages) a killed process must not leave half written."""
  png = io.BytesIO()
  Image.fromarray(image).save(png, format='PNG')
  storage.write_bytes_atomically(path, png.getvalue())


def for_viewing(images: np.ndarray) -> np.ndarray:
  """[-1, 1] floats of any channel count -> 3 channels, so that sample grids
  and results pages show every model in RGB: gray repeated, the first three
  of more."""
  channels = images.shape[-1]
  return images[..., [i % channels for i in range(3)]]
