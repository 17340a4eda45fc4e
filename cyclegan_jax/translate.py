"""Translate a folder of images with a trained generator, at each image's size."""

import functools
import os

import jax
import numpy as np
from PIL import Image
import tqdm

from cyclegan_jax import checkpoints
from cyclegan_jax import input_pipeline
from cyclegan_jax import models

DIRECTIONS = {'AtoB': 'gen_ab', 'BtoA': 'gen_ba'}


@functools.partial(jax.jit, static_argnums=0)
def _generate(generator, params, images):
  return generator.apply({'params': params}, images, train=False)


def translate_image(generator, params, image: np.ndarray) -> np.ndarray:
  """uint8 RGB (H, W, 3) of any size -> translated uint8 RGB of the same size.

  The generator is fully convolutional but needs sizes that are a multiple of
  its downsampling factor: reflect-pad up to one, translate, crop back.
  """
  multiple = models.generator_multiple(generator)
  h, w = image.shape[:2]
  x = image.astype(np.float32) / 127.5 - 1.0
  x = np.pad(x, ((0, -h % multiple), (0, -w % multiple), (0, 0)), mode='reflect')
  y = _generate(generator, params, x[None])[0, :h, :w]
  return input_pipeline.to_uint8(y)


def translate_folder(workdir: str, input_dir: str, output_dir: str, direction: str = 'AtoB',
                     step: int | None = None) -> list[str]:
  """Writes `output_dir/<name>.png` for every image in `input_dir`."""
  if direction not in DIRECTIONS:
    raise ValueError(f'--direction={direction!r}: expected AtoB or BtoA')
  config = checkpoints.load_config(workdir)
  files = input_pipeline.list_images(input_dir)
  step, params = checkpoints.load_params(workdir, (DIRECTIONS[direction],), step)
  params = params[DIRECTIONS[direction]]
  generator = models.create_generator(config.model)
  os.makedirs(output_dir, exist_ok=True)
  written = []
  for path in tqdm.tqdm(files, desc=f'{direction} (step {step})', unit='image'):
    output = translate_image(generator, params, input_pipeline.load_image(path))
    out_path = os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0] + '.png')
    Image.fromarray(output).save(out_path)
    written.append(out_path)
  return written
