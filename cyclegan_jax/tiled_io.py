"""Image files read and written a window at a time, for images larger than
memory: TIFF (classic or BigTIFF, tiled or in strips, any compression
tifffile decodes, 8/16-bit or float, 1 or more channels) through tifffile's
zarr view, which decodes only the tiles or strips a window touches; and
TIFF written tile by tile as the tiles arrive. Other formats are decoded
whole (their decoders offer no windows) and then read a window at a time.

On Cloud Storage (gs://...), a TIFF is read from a local temporary copy (the
zarr view needs a file it can seek in) and a tiled TIFF is written to a local
temporary file, uploaded whole when complete (storage.local_file and
local_output); other images go through image_io, which reads and writes
remote files in memory.
"""

import contextlib
import os

import numpy as np

from cyclegan_jax import image_io
from cyclegan_jax import storage

# A TIFF stored in chunks this large or larger (one strip or tile holding
# most of the image) cannot be read a window at a time without decoding it
# all for each window: it is read whole, once, instead.
_STREAMABLE_CHUNK_FRACTION = 0.5
# Read whole without a word below this size; above it, one log line says so.
WHOLE_READ_NOTE_PIXELS = 4096 * 4096


class ImageWindows:
  """An image file's size and pixel type, and its pixels a window at a time
  (`read`, at the file's own type and channels, as image_io.read gives them)."""

  def __init__(self, path: str, array=None):
    self.path = path
    self._array = array
    self.streamed = False
    if array is not None:
      self.height, self.width, self.channels = array.shape
      self.dtype = array.dtype
      self.note = ''

  def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    return self._array[y0:y1, x0:x1]

  def close(self) -> None:
    pass


class _TiffWindows(ImageWindows):
  """A TIFF's first image through tifffile's zarr store."""

  def __init__(self, path: str):
    import tifffile  # pylint: disable=import-outside-toplevel
    import zarr  # pylint: disable=import-outside-toplevel
    super().__init__(path)
    # A remote TIFF: a local copy, kept until close().
    self._local = contextlib.ExitStack()
    try:
      self._tiff = tifffile.TiffFile(self._local.enter_context(storage.local_file(path)))
    except BaseException:
      self._local.close()
      raise
    try:
      series = self._tiff.series[0]
      self._axes = series.axes
      if self._axes not in ('YX', 'YXS', 'SYX', 'CYX', 'QYX') or len(series.shape) not in (2, 3):
        raise ValueError(f'a TIFF of shape {series.shape} (axes {series.axes}); expected one '
                         '2-D image, gray or with channels')
      self._zarr = zarr.open(series.aszarr(), mode='r')
    except Exception:
      self.close()
      raise
    shape = series.shape
    planar = self._axes[0] != 'Y'
    self.height, self.width = (shape[1], shape[2]) if planar else shape[:2]
    self.channels = (shape[0] if planar else shape[2]) if len(shape) == 3 else 1
    self.dtype = np.dtype(np.float32) if series.dtype in (np.float16, np.float64) \
        else np.dtype(series.dtype)
    chunk = self._zarr.chunks
    chunk_pixels = (chunk[1] * chunk[2]) if planar else chunk[0] * chunk[1]
    self.streamed = chunk_pixels < _STREAMABLE_CHUNK_FRACTION * self.height * self.width
    self.note = ''
    if not self.streamed and self.height * self.width > WHOLE_READ_NOTE_PIXELS:
      self.note = (f'{path}: stored as one block (neither tiled nor in strips), so it cannot '
                   'be read a window at a time; it is read whole instead (a TIFF written '
                   'tiled, e.g. tifffile tile=(512, 512), is streamed)')
    if not self.streamed:
      self._array = self._window(0, self.height, 0, self.width)

  def _window(self, y0, y1, x0, x1):
    if self._axes[0] != 'Y':  # Planar: channels first.
      pixels = np.asarray(self._zarr[:, y0:y1, x0:x1]).transpose(1, 2, 0)
    else:
      pixels = np.asarray(self._zarr[y0:y1, x0:x1])
    pixels = pixels.reshape(*pixels.shape[:2], -1)
    return pixels.astype(np.float32) if pixels.dtype in (np.float16, np.float64) else pixels

  def read(self, y0, y1, x0, x1):
    if self._array is not None:
      return self._array[y0:y1, x0:x1]
    return self._window(y0, y1, x0, x1)

  def close(self):
    try:
      self._tiff.close()
    finally:
      self._local.close()


def open_image(path: str) -> ImageWindows:
  """An image file, opened for reading windows: a TIFF read lazily (its
  header now, the pixels a window at a time), anything else decoded whole.
  BadImageError, naming the file, for a file that cannot be opened or has a
  pixel type the value rule does not know."""
  if not path.lower().endswith(image_io.TIFF_EXTENSIONS):
    return ImageWindows(path, image_io.read(path))
  try:
    windows = _TiffWindows(path)
  except Exception as e:  # tifffile and zarr raise their own, OSError, ValueError, ...
    raise image_io.BadImageError(f'{path}: cannot read this image '
                                 f'({" ".join(str(e).split()) or type(e).__name__})') from e
  if windows.dtype not in image_io.TYPE_RANGES:
    windows.close()
    raise image_io.BadImageError(f'{path}: pixels of type {windows.dtype}; expected 8-bit, '
                                 '16-bit (unsigned or signed) or float32')
  return windows


@contextlib.contextmanager
def removed_on_error(path: str, name: str | None = None):
  """Deletes `path` if the block fails (a full disk, a bad tile, Ctrl-C), so
  that no partial output is left that looks finished; an OSError is raised
  again naming the file (`name`: the file to name instead, e.g. the remote
  object a local `path` is written for). A remote `path` has nothing to
  delete: an object is created whole by its upload, or not at all."""
  try:
    yield
  except BaseException as e:
    if not storage.is_remote(path):
      with contextlib.suppress(OSError):
        os.remove(path)
    if isinstance(e, OSError):
      name = name or path
      left = 'nothing was uploaded' if storage.is_remote(name) else 'the partial file was removed'
      raise OSError(f'{name}: cannot be written ({e.strerror or e}); {left}') from e
    raise


def write_tiff_tiles(path: str, height: int, width: int, channels: int, dtype, tile,
                     tiles) -> None:
  """Writes a tiled TIFF (BigTIFF when over 2 GiB) from `tiles`: arrays of
  (at most) tile = (rows, columns) pixels in row-major order of the tile
  grid, each written as it arrives, so only one is held at a time. TIFF
  tiles are multiples of 16: a tile that is not is rounded up and padded."""
  import tifffile  # pylint: disable=import-outside-toplevel
  dtype = np.dtype(dtype)
  shape = (height, width, channels) if channels > 1 else (height, width)
  squeeze = (lambda t: t[..., 0]) if channels == 1 else (lambda t: t)
  tile = tuple(-(-side // 16) * 16 for side in tile)
  # A remote output: written locally, then uploaded whole (only if complete).
  with storage.local_output(path) as local, removed_on_error(local, path):
    with tifffile.TiffWriter(local, bigtiff=height * width * channels * dtype.itemsize > 2**31
                             ) as writer:
      writer.write((np.ascontiguousarray(squeeze(t)) for t in tiles), shape=shape,
                   dtype=dtype, tile=tile,
                   photometric='rgb' if channels == 3 else 'minisblack')
