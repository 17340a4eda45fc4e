"""A generator applied in test mode: G(x) and F(G(x)) for batches, and the
translation of images of any size and pixel type (padded to the generator's
multiple, checked to fit in memory before it runs). What translate, video,
evaluation, the results page, the sample grids and export run."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cyclegan_jax import image_io
from cyclegan_jax import memory
from cyclegan_jax import models

# Generators built with dropout_at_test (pix2pix) draw their test-time dropout
# masks from this fixed seed, so that translating twice gives the same images.
TEST_DROPOUT_SEED = 0


def draws_noise(generator) -> bool:
  """Whether a generator translates in steps that draw noise (UNSB's): its
  translation takes --nfe and --seed, and tiling runs it step by step."""
  return getattr(generator, 'draws_noise', False)


def apply_in_test_mode(generator, params, images):
  """G(x) in test mode, not jitted (tiling.py wraps it in its own programs)."""
  # The key is made here, under jit: a key made at import would start JAX's
  # backend before jax.distributed.initialize can run.
  return generator.apply({'params': params}, images, train=False,
                         rngs={'dropout': jax.random.PRNGKey(TEST_DROPOUT_SEED)})


def apply_every_step(generator, params, images):
  """(N, steps, H, W, C): the translation after each step of a generator that
  translates in steps from noise (UNSB's every_step; NFE 1, 2, ...), not
  jitted."""
  return jnp.stack(generator.apply({'params': params}, images, method='every_step'), axis=1)


generate_every_step = jax.jit(apply_every_step, static_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def generate(generator, params, images):
  """G(x) for a batch of images in [-1, 1], in test mode."""
  return apply_in_test_mode(generator, params, images)


@functools.partial(jax.jit, static_argnums=(0, 1))
def translate_and_back(generator_there, generator_back, params_there, params_back, images):
  """(G(x), F(G(x))) for a batch: the translation and its reconstruction."""
  translated = apply_in_test_mode(generator_there, params_there, images)
  return translated, apply_in_test_mode(generator_back, params_back, translated)


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


def check_fits(generator, params, shape) -> None:
  """InsufficientMemoryError (one line) when `generate` of an NHWC float32
  batch of this shape would not fit in the memory available, by XLA's
  analysis of its compiled program, before anything runs."""
  _fitting_generate(generator, params, jax.ShapeDtypeStruct(shape, np.float32))


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
