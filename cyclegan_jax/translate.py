"""Translate a folder of images with a trained generator, at each image's
size: whole, or in tiles (tiling.py) when asked or when the image does not
fit in memory whole, read and written a window at a time (tiled_io.py).

The input folder and the output folder may be on Cloud Storage
(gs://bucket/path): images are read and written through storage (image_io,
tiled_io), each output object created whole by its upload."""

import collections
import os
import tempfile

from absl import logging
import numpy as np
import tqdm

from cyclegan_jax import generation
from cyclegan_jax import image_io
from cyclegan_jax import inference
from cyclegan_jax import memory
from cyclegan_jax import storage
from cyclegan_jax import tiled_io
from cyclegan_jax import tiling
from cyclegan_jax.data import input_pipeline


def output_names(files: list[str], extensions: list[str] | None = None) -> list[str]:
  """The output file name of each input: `<stem><extension>` (default .png),
  except for inputs that share a stem (a.jpg and a.png), which keep their
  whole name (a.jpg.png, a.png.png) so that neither overwrites the other."""
  extensions = extensions or ['.png'] * len(files)
  stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
  counts = collections.Counter(stem.lower() for stem in stems)  # lower(): case-blind disks.
  names = [(stem if counts[stem.lower()] == 1 else os.path.basename(f)) + extension
           for stem, f, extension in zip(stems, files, extensions)]
  taken = {}
  for f, name in zip(files, names):  # Still possible: a.jpg, a.png and a.jpg.png.
    if name.lower() in taken:
      raise ValueError(f'{taken[name.lower()]} and {f} would both be translated to {name}; '
                       'rename one of them')
    taken[name.lower()] = f
  return names


def _check_output_dir(output_dir: str, input_dir: str) -> None:
  """Refuses an output folder that is the input folder or cannot be written,
  before any work is done."""
  if storage.same_path(output_dir, input_dir):
    raise ValueError(f'--output={output_dir} is the input folder {input_dir}; choose another '
                     'folder, so that translations cannot overwrite or mix with the inputs')
  if storage.is_remote(output_dir):
    if storage.isfile(output_dir):
      raise FileExistsError(f'--output={output_dir} is a file; expected a folder (it is '
                            'created if missing)')
    problem = storage.write_problem(output_dir)
    if problem:
      raise OSError(f'--output={output_dir}: cannot create this folder or write in it '
                    f'({problem})')
    return
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise FileExistsError(f'--output={output_dir} is a file; expected a folder (it is '
                          'created if missing)')
  try:
    os.makedirs(output_dir, exist_ok=True)
    with tempfile.TemporaryFile(dir=output_dir):  # Can files be written there?
      pass
  except OSError as e:
    raise OSError(f'--output={output_dir}: cannot create this folder or write in it '
                  f'({e.strerror or e})') from e


def translate_folder(workdir: str, input_dir: str, output_dir: str,
                     direction: str | None = None, step: int | None = None,
                     output_format: str | None = None, tile: int | None = None,
                     tile_stats: str = 'exact', run: str | None = None,
                     nfe: int | None = None, seed: int | None = None) -> list[str]:
  """Writes `output_dir/<name>` for every image in `input_dir` (names as
  `output_names` gives them) at the input's pixel type and the generator's
  channels, mapped back through the value rule the input was read with
  (16-bit in, 16-bit out): PNG, or TIFF for TIFF inputs (`output_format`
  'png' | 'tiff' chooses one for all). Returns the paths written.

  The inputs are never written to: an output folder that is the input folder
  is refused. A file that cannot be read stops the run with an error naming
  it (input_pipeline.BadImageError); the images before it are already written.

  `tile` (pixels): translate every image in tiles of that size with
  whole-image statistics (`tile_stats`, tiling.STATS_MODES). Without it, an
  image whose translation would not fit in memory whole is tiled anyway, at
  the largest size that fits (one log line says so). `run`: a sweep's run (by
  name or index). `nfe`, `seed`: the steps and noise seed of a model that
  translates in steps (UNSB; inference.with_sampling): each image is
  translated from the same seed, so the same command gives the same images.
  """
  config = inference.load_config(workdir, run)
  inference.wanted(config, direction)  # An unknown direction is named before any work.
  files = input_pipeline.list_images(input_dir)
  extensions = [image_io.output_extension(output_format, f) for f in files]
  names = output_names(files, extensions)
  _check_output_dir(output_dir, input_dir)
  if tile_stats not in tiling.STATS_MODES:
    raise ValueError(f'--tile_stats={tile_stats!r}: expected one of '
                     f'{", ".join(tiling.STATS_MODES)}')
  restored = inference.restore(workdir, direction, step, config, run, nfe, seed)
  generator = restored.generator
  if tile is not None:
    tiling.check_tile(generator.module, tile)
  value_range = config.data.value_range
  written = []
  for path, name in zip(tqdm.tqdm(files, desc=f'{generator.direction} (step {restored.step})',
                                  unit='image'), names):
    out_path = os.path.join(output_dir, name)
    try:
      translate_file(generator, path, out_path, value_range, tile, tile_stats)
    except memory.InsufficientMemoryError as e:
      raise memory.InsufficientMemoryError(f'{path}: {e}') from None
    written.append(out_path)
  return written


def translate_file(generator: inference.Generator, path: str, out_path: str, value_range=(),
                   tile: int | None = None, tile_stats: str = 'exact',
                   bucket: int | None = None) -> None:
  """Writes the translation of the image file `path` to `out_path`: whole,
  or in tiles (`tile`, or the largest that fits when the whole does not),
  or (`bucket`, the demo's) on a canvas shared by sizes in one bucket
  (tiling.translate_image_in_bucket)."""
  windows = tiled_io.open_image(path)
  try:
    if windows.note:
      logging.warning('%s', windows.note)
    module, params, channels = generator.module, generator.params, generator.in_channels
    height, width = windows.height, windows.width
    if tile is None and bucket is None:
      try:
        generation.check_fits(module, params,
                              (1, *tiling.padded_size(module, height, width), channels))
      except memory.InsufficientMemoryError as whole:
        try:
          tile = tiling.fitting_tile(module, params, height, width, channels,
                                     f'translating a {width}x{height} image in tiles')
        except memory.InsufficientMemoryError:
          raise whole from None  # Not even in tiles: the untiled refusal says what to do.
        logging.warning('%s: a %dx%d image does not fit in memory whole; translating it in '
                        '%d-pixel tiles (%s statistics)', path, width, height, tile,
                        tile_stats)
    if tile is None or generation.draws_noise(module):
      # A model that translates in steps holds x_t whole between its steps:
      # the image is read whole, each step runs in tiles (tiling.py).
      image = image_io.to_channels(windows.read(0, height, 0, width), channels, path)
      image_io.check_value_range(image, value_range, path)
      if tile is not None:
        translated = tiling.translate_image_tiled(module, params, image, tile, value_range,
                                                  tile_stats)
      elif bucket is not None:
        translated = tiling.translate_image_in_bucket(module, params, image, bucket,
                                                      value_range)
      else:
        translated = generation.translate_image(module, params, image, value_range)
      image_io.write(out_path, translated)
    else:
      _translate_tiled(generator, windows, out_path, value_range, tile, tile_stats)
  finally:
    windows.close()


def _translate_tiled(generator, windows: tiled_io.ImageWindows, out_path: str, value_range,
                     tile: int, tile_stats: str) -> None:
  """Reads `windows` a window at a time and writes a TIFF output a tile at a
  time (other formats are assembled whole, then written)."""
  height, width, path = windows.height, windows.width, windows.path
  low, high = image_io.value_range(value_range, windows.dtype)

  def read_window(y0, y1, x0, x1):
    rows, cols = tiling.reflect_indices(y0, y1, height), tiling.reflect_indices(x0, x1, width)
    pixels = windows.read(rows.min(), rows.max() + 1, cols.min(), cols.max() + 1)
    pixels = image_io.to_channels(pixels[np.ix_(rows - rows.min(), cols - cols.min())],
                                  generator.in_channels, path)
    image_io.check_value_range(pixels, value_range, path)
    return image_io.to_unit(pixels, low, high)

  tiled = tiling.TiledTranslation(generator.module, generator.params, height, width,
                                  generator.in_channels, tile, read_window, tile_stats)
  tiled.check_fits(f'translating {path} in {tile}-pixel tiles')
  with tqdm.tqdm(total=tiled.tile_runs(), unit='window', leave=False,
                 desc=f'{os.path.basename(path)}: {len(tiled.tiles)} tiles') as bar:
    stats = tiled.statistics(bar.update)
    tiles = ((box, image_io.from_unit(y, low, high, windows.dtype))
             for box, y in tiled.outputs(stats, bar.update))
    if out_path.lower().endswith(image_io.TIFF_EXTENSIONS):
      tiled_io.write_tiff_tiles(out_path, height, width, generator.out_channels, windows.dtype,
                                tiled.core, (pixels for _, pixels in tiles))
      return
    output = np.empty((height, width, generator.out_channels), windows.dtype)
    for (y0, y1, x0, x1), pixels in tiles:
      output[y0:y1, x0:x1] = pixels
    with tiled_io.removed_on_error(out_path):
      image_io.write(out_path, output)
