"""Translate a folder of images with a trained generator, at each image's size."""

import collections
import os
import tempfile

import tqdm

from cyclegan_jax import configuration
from cyclegan_jax import generation
from cyclegan_jax import image_io
from cyclegan_jax import inference
from cyclegan_jax import memory
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
  if os.path.realpath(output_dir) == os.path.realpath(input_dir):
    raise ValueError(f'--output={output_dir} is the input folder {input_dir}; choose another '
                     'folder, so that translations cannot overwrite or mix with the inputs')
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
                     output_format: str | None = None) -> list[str]:
  """Writes `output_dir/<name>` for every image in `input_dir` (names as
  `output_names` gives them) at the input's pixel type and the generator's
  channels, mapped back through the value rule the input was read with
  (16-bit in, 16-bit out): PNG, or TIFF for TIFF inputs (`output_format`
  'png' | 'tiff' chooses one for all). Returns the paths written.

  The inputs are never written to: an output folder that is the input folder
  is refused. A file that cannot be read stops the run with an error naming
  it (input_pipeline.BadImageError); the images before it are already written.
  """
  config = configuration.load(workdir)
  inference.wanted(config, direction)  # An unknown direction is named before any work.
  files = input_pipeline.list_images(input_dir)
  extensions = [image_io.output_extension(output_format, f) for f in files]
  names = output_names(files, extensions)
  _check_output_dir(output_dir, input_dir)
  restored = inference.restore(workdir, direction, step, config)
  generator = restored.generator
  value_range = config.data.value_range
  written = []
  for path, name in zip(tqdm.tqdm(files, desc=f'{generator.direction} (step {restored.step})',
                                  unit='image'), names):
    image = input_pipeline.load_image(path, generator.in_channels, value_range)
    try:
      output = generation.translate_image(generator.module, generator.params, image,
                                          value_range)
    except memory.InsufficientMemoryError as e:
      raise memory.InsufficientMemoryError(f'{path}: {e}') from None
    out_path = os.path.join(output_dir, name)
    image_io.write(out_path, output)
    written.append(out_path)
  return written
