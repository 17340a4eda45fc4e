"""Translate a folder of images with a trained generator, at each image's size."""

import collections
import functools
import os
import tempfile

import jax
import numpy as np
import tqdm

from cyclegan_jax import checkpoints
from cyclegan_jax import families
from cyclegan_jax import image_io
from cyclegan_jax import input_pipeline
from cyclegan_jax import memory
from cyclegan_jax import models

# Generators built with dropout_at_test (pix2pix) draw their test-time dropout
# masks from this fixed seed, so that translating twice gives the same images.
TEST_DROPOUT_SEED = 0


def _apply(generator, params, images):
  # The key is made here, under jit: a key made at import would start JAX's
  # backend before jax.distributed.initialize can run.
  return generator.apply({'params': params}, images, train=False,
                         rngs={'dropout': jax.random.PRNGKey(TEST_DROPOUT_SEED)})


@functools.partial(jax.jit, static_argnums=0)
def generate(generator, params, images):
  """G(x) for a batch of images in [-1, 1], in test mode."""
  return _apply(generator, params, images)


@functools.partial(jax.jit, static_argnums=(0, 1))
def translate_and_back(generator_there, generator_back, params_there, params_back, images):
  """(G(x), F(G(x))) for a batch: the translation and its reconstruction."""
  translated = _apply(generator_there, params_there, images)
  return translated, _apply(generator_back, params_back, translated)


# Compiled `generate` per (generator, input shape, dtype), each checked to fit
# in memory once; bounded, as a folder of photos may hold many sizes.
_compiled_generate = {}
_MAX_COMPILED = 32


def _fitting_generate(generator, params, x):
  """`generate` compiled for x's shape; InsufficientMemoryError (one line) if
  XLA's analysis of it exceeds the memory available, before it runs."""
  key = (generator, x.shape, str(x.dtype))
  if key not in _compiled_generate:
    compiled = generate.lower(generator, params, x).compile()
    n, h, w, _ = x.shape
    what = f'translating a {w}x{h} image' if n == 1 else f'translating {n} {w}x{h} images'
    memory.check_fits(compiled, what,
                      'resize it (half the width and height needs about a quarter of the '
                      'memory) or translate on a machine with more memory')
    if len(_compiled_generate) >= _MAX_COMPILED:
      _compiled_generate.clear()
    _compiled_generate[key] = compiled
  return _compiled_generate[key]


def translate_image(generator, params, image: np.ndarray, value_range=()) -> np.ndarray:
  """An (H, W, C) image of any size and pixel type -> its translation, of the
  same size and pixel type, mapped to [-1, 1] and back by the value rule
  (image_io: `value_range`, config.data.value_range, or the type's range).

  The generator is fully convolutional but needs sizes that are a multiple of
  its downsampling factor: reflect-pad up to one, translate, crop back. An
  image too large for the memory available is refused before it runs
  (memory.InsufficientMemoryError, one line).
  """
  return translate_images(generator, params, image[None], value_range)[0]


def translate_images(generator, params, images: np.ndarray, value_range=()) -> np.ndarray:
  """translate_image for an (N, H, W, C) batch of images of one size, in one
  call of the generator (a batch-norm generator normalises by the batch's
  statistics: its translations then depend on the whole batch)."""
  multiple = models.generator_multiple(generator)
  h, w = images.shape[1:3]
  low, high = image_io.value_range(value_range, images.dtype)
  x = image_io.to_unit(images, low, high)
  x = np.pad(x, ((0, 0), (0, -h % multiple), (0, -w % multiple), (0, 0)), mode='reflect')
  y = _fitting_generate(generator, params, x)(params, x)[:, :h, :w]
  return image_io.from_unit(y, low, high, images.dtype)


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


def network_for(config, direction: str | None) -> tuple[str, str]:
  """(checkpointed network, direction) that translates `direction` (None:
  CycleGAN's AtoB, or the one direction a pix2pix model was trained for)."""
  return families.get(config).network_for(config, direction)


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
  config = checkpoints.load_config(workdir)
  network, direction = network_for(config, direction)
  files = input_pipeline.list_images(input_dir)
  extensions = [image_io.output_extension(output_format, f) for f in files]
  names = output_names(files, extensions)
  _check_output_dir(output_dir, input_dir)
  step, params = checkpoints.load_params(workdir, (network,), step)
  params = params[network]
  generator = models.create_generators(config.model)[network]
  channels = models.generator_input_channels(config.model, network)
  value_range = config.data.get('value_range', ())
  written = []
  for path, name in zip(tqdm.tqdm(files, desc=f'{direction} (step {step})', unit='image'),
                        names):
    image = input_pipeline.load_image(path, channels, value_range)
    try:
      output = translate_image(generator, params, image, value_range)
    except memory.InsufficientMemoryError as e:
      raise memory.InsufficientMemoryError(f'{path}: {e}') from None
    out_path = os.path.join(output_dir, name)
    image_io.write(out_path, output)
    written.append(out_path)
  return written
