"""Translate a video: every frame at the video's own size, in batches, written
as a video of the same frame rate. The audio is dropped.

Frames are read and written by imageio's FFMPEG plugin (the ffmpeg binary
that imageio-ffmpeg ships), so any container ffmpeg decodes can be read.
Written: .mkv as FFV1 (lossless, RGB), .mp4/.mov/.m4v/.avi as H.264 (yuv420p,
imageio quality 8 of 10: small files that every player opens, but lossy).

The input and the output may be on Cloud Storage (gs://bucket/path): ffmpeg
reads a local temporary copy of a remote input and writes a local temporary
file, uploaded whole once every frame is written (storage.local_file and
local_output).
"""

import contextlib
import logging
import os

import numpy as np
import tqdm

from cyclegan_jax import families
from cyclegan_jax import generation
from cyclegan_jax import image_io
from cyclegan_jax import inference
from cyclegan_jax import memory
from cyclegan_jax import models
from cyclegan_jax import storage
from cyclegan_jax import tiling

VIDEO_EXTENSIONS = ('.mp4', '.mov', '.m4v', '.avi', '.mkv', '.webm', '.mpg', '.mpeg', '.wmv',
                    '.flv', '.gif')
# Output extension -> (ffmpeg codec, pixel format, imageio quality).
OUTPUT_CODECS = {'.mkv': ('ffv1', 'bgr0', None),
                 **{ext: ('libx264', 'yuv420p', 8) for ext in ('.mp4', '.mov', '.m4v', '.avi')}}


def is_video(path: str) -> bool:
  return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def _imageio():
  try:
    import imageio.v2 as iio  # pylint: disable=import-outside-toplevel
    import imageio_ffmpeg  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError as e:
    raise ImportError(f'video translation needs the optional extra "export" ({e.name} is '
                      'missing): pip install -e ".[export]"') from None
  return iio


def _output_codec(output_path: str, input_path: str) -> tuple[str, str, int | None]:
  """The (codec, pixel format, quality) of `output_path`, after refusing an
  output that would write over the input or cannot be a video file."""
  extension = os.path.splitext(output_path)[1].lower()
  if extension not in OUTPUT_CODECS:
    raise ValueError(f'--output={output_path}: expected a video file name ending in '
                     f'{", ".join(OUTPUT_CODECS)} (.mkv: lossless)')
  if storage.is_remote(output_path):
    _check_remote_output(output_path, input_path)
    return OUTPUT_CODECS[extension]
  if os.path.isdir(output_path):
    raise IsADirectoryError(f'--output={output_path} is a folder; expected a video file name')
  if (not storage.is_remote(input_path) and os.path.exists(output_path)
      and os.path.samefile(output_path, input_path)):
    raise ValueError(f'--output={output_path} is the input video; choose another file name')
  parent = os.path.dirname(os.path.abspath(output_path))
  if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
    raise OSError(f'--output={output_path}: cannot write in {parent}')
  return OUTPUT_CODECS[extension]


def _check_remote_output(output_path: str, input_path: str) -> None:
  """_output_codec's refusals for an output on object storage: a folder, the
  input itself, a place this process cannot write to (a probe object)."""
  if storage.isdir(output_path):
    raise IsADirectoryError(f'--output={output_path} is a folder; expected a video file name')
  if storage.same_path(output_path, input_path):
    raise ValueError(f'--output={output_path} is the input video; choose another file name')
  parent = os.path.dirname(storage.absolute(output_path))
  problem = storage.write_problem(parent)
  if problem:
    raise OSError(f'--output={output_path}: cannot write in {parent} ({problem})')


def _open(iio, path: str, files: contextlib.ExitStack):
  """A frame reader of `path` and its (fps, width, height), or a ValueError
  naming a file ffmpeg cannot decode. A remote `path` is read from a local
  copy, which `files` holds."""
  remote = storage.is_remote(path)
  if not (storage.isfile(path) if remote else os.path.isfile(path)):
    raise FileNotFoundError(f'--input={path}: no such file')
  local = files.enter_context(storage.local_file(path)) if remote else path
  try:
    reader = iio.get_reader(local, format='FFMPEG')
    meta = reader.get_meta_data()
    width, height = meta['size']
    return reader, float(meta['fps']), width, height, meta.get('duration')
  except (OSError, RuntimeError, KeyError, ValueError, IndexError) as e:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ValueError(f'--input={path}: cannot decode this video '
                     f'({reason.replace(local, path)})') from None


def _batches(reader, size: int, path: str):
  batch = []
  try:
    for frame in reader.iter_data():
      batch.append(frame)
      if len(batch) == size:
        yield np.stack(batch)
        batch = []
  except (OSError, RuntimeError) as e:
    raise ValueError(f'--input={path}: cannot decode frame {len(batch)} of a batch '
                     f'({str(e).strip().splitlines()[0]})') from None
  if batch:
    yield np.stack(batch)


def translate_video(workdir: str, input_path: str, output_path: str,
                    direction: str | None = None, step: int | None = None,
                    batch_size: int = 8, tile: int | None = None,
                    tile_stats: str = 'exact', run: str | None = None,
                    nfe: int | None = None, seed: int | None = None) -> int:
  """Writes the translation of every frame of `input_path` to `output_path`
  at the same size and frame rate (no audio); returns the number of frames.

  Frames go through the generator `batch_size` at a time (fewer where a batch
  would not fit in memory; one at a time for batch-norm generators and
  test-time dropout, whose output would otherwise depend on the other frames
  of the batch: batch statistics, masks drawn for the batch's shape). The video
  is written to a temporary file beside `output_path` and renamed when
  complete: a failure leaves no half video, and never touches the input.
  With `tile`, each frame is translated in tiles (tiling.py, `tile_stats`);
  a frame that does not fit in memory whole is tiled anyway. `run`: a sweep's
  run (by name or index). `nfe`, `seed`: as translate_folder's; a model that
  translates from noise gives every frame the same noise (no flicker).
  """
  if batch_size < 1:
    raise ValueError(f'--batch_size={batch_size}: expected at least 1')
  iio = _imageio()
  config = inference.load_config(workdir, run)
  (network, direction), = inference.wanted(config, direction)
  codec, pixel_format, quality = _output_codec(output_path, input_path)
  _, out_channels = families.get(config).generator_channels(config.model, network)
  if out_channels not in (1, 3):
    raise ValueError(f'this generator outputs {out_channels} channels; a video holds 1 '
                     '(gray) or 3 (RGB)')
  with contextlib.ExitStack() as files:  # A remote input's local copy; a remote output.
    reader, fps, width, height, duration = _open(iio, input_path, files)
    try:
      if pixel_format == 'yuv420p' and (width % 2 or height % 2):
        raise ValueError(f'--output={output_path}: H.264 needs an even width and height, and '
                         f'{input_path} is {width}x{height}; write a .mkv (lossless FFV1) '
                         'instead')
      restored = inference.restore(workdir, direction, step, config, run, nfe, seed)
      step, params = restored.step, restored.generator.params
      generator, channels = restored.generator.module, restored.generator.in_channels
      value_range = config.data.value_range
      if tile is not None:
        tiling.check_tile(generator, tile)
      if config.model.norm == 'batch' or (
          models.has_dropout_layers(generator) and generator.dropout_at_test):
        batch_size = 1  # Its translation of a frame would depend on the batch.
      # A remote output: a local file, uploaded whole when the stack closes
      # without an error.
      local_output = files.enter_context(storage.local_output(output_path))
      partial = os.path.join(os.path.dirname(os.path.abspath(local_output)),
                             '.partial.' + os.path.basename(local_output))
      writer = iio.get_writer(partial, format='FFMPEG', fps=fps, codec=codec, quality=quality,
                              pixelformat=pixel_format, macro_block_size=1,
                              ffmpeg_log_level='error')
      total = round(duration * fps) if duration else None
      frames, chunk = 0, batch_size
      try:
        with tqdm.tqdm(total=total, desc=f'{direction} (step {step})', unit='frame') as progress:
          for batch in _batches(reader, batch_size, input_path):
            batch = image_io.to_channels(batch, channels, input_path)
            try:
              if tile is None:
                outputs, chunk = _translate_fitting(generator, params, batch, value_range, chunk)
              else:
                outputs = [tiling.translate_image_tiled(generator, params, frame, tile,
                                                        value_range, tile_stats)
                           for frame in batch]
            except memory.InsufficientMemoryError as e:
              if tile is not None:
                raise memory.InsufficientMemoryError(f'{input_path}: {e}') from None
              tile = tiling.fitting_tile(generator, params, height, width, channels,
                                         f'translating {width}x{height} frames in tiles')
              logging.warning('%s: a %dx%d frame does not fit in memory whole; translating '
                              'each in %d-pixel tiles (%s statistics)', input_path, width,
                              height, tile, tile_stats)
              outputs = [tiling.translate_image_tiled(generator, params, frame, tile,
                                                      value_range, tile_stats)
                         for frame in batch]
            for output in outputs:
              writer.append_data(np.repeat(output, 3, axis=-1) if out_channels == 1 else output)
            frames += len(batch)
            progress.update(len(batch))
        if not frames:
          raise ValueError(f'--input={input_path}: no frame could be read from this video')
        writer.close()
        os.replace(partial, local_output)
      except BaseException:
        with contextlib.suppress(Exception):  # ffmpeg may be what failed.
          writer.close()
        if os.path.exists(partial):
          os.remove(partial)
        raise
    finally:
      reader.close()
  return frames


def _translate_fitting(generator, params, frames, value_range, chunk: int):
  """(translate_images of `frames` `chunk` at a time, the chunk used): the
  chunk is halved while one would not fit in memory (memory.check_fits, which
  refuses before anything runs); a single frame that does not fit is refused
  (InsufficientMemoryError)."""
  while True:
    try:
      return np.concatenate([
          generation.translate_images(generator, params, frames[i:i + chunk], value_range)
          for i in range(0, len(frames), chunk)]), chunk
    except memory.InsufficientMemoryError:
      if chunk == 1:
        raise
      chunk //= 2
      logging.info('Frames of %dx%d: translating %d at a time, as more do not fit in memory',
                   frames.shape[2], frames.shape[1], chunk)
