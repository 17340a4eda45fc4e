"""What the model families share: their networks' train states, the
per-device marking their steps differentiate through, sample-grid rows,
results-page tables (as data) and the checks of the test images they are
scored on."""

import contextlib
import dataclasses
import os

from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np

from cyclegan_jax import image_io
from cyclegan_jax import models
from cyclegan_jax.data import input_pipeline
from cyclegan_jax.data import paired_data


def network_state(module, init_key, image_shape, channels: int, tx) -> train_state.TrainState:
  """`module` initialised on one (H, W, channels) image, with optimiser `tx`."""
  height, width = image_shape[:2]
  params = module.init(init_key, jnp.zeros((1, height, width, channels), jnp.float32))['params']
  return train_state.TrainState.create(apply_fn=module.apply, params=params, tx=tx)


def open_unpaired_training_data(config, shard, channels):
  """(unpaired training batches, test images {'A', 'B'} for the sample grids,
  a line describing the data): CycleGAN's and CUT's data."""
  sources = input_pipeline.open_sources(config.data, channels)
  batches = input_pipeline.UnpairedBatches(sources['trainA'], sources['trainB'], config.data,
                                           *shard, pixels=True)
  samples = {domain: input_pipeline.test_images(sources['test' + domain], config.data,
                                                config.num_samples) for domain in 'AB'}
  return batches, samples, (f'{len(sources["trainA"])} A and {len(sources["trainB"])} B '
                            'training images')


def per_device(tree):
  """Marks replicated values as per-device before differentiating, so that
  the gradients are per device and `pmean` averages them (as `pmap` did);
  without it, shard_map's autodiff already sums them over devices."""
  return jax.lax.pcast(tree, 'data', to='varying')


def enabled(weight) -> bool:
  """Whether a loss term with this weight is computed: a weight > 0, or a
  swept one (an array inside a sweep's step: sweeps.check lets a term's
  weight be swept only over values that are all > 0)."""
  return not isinstance(weight, (int, float)) or weight > 0


def step_key(state) -> jax.Array:
  """This step's key on this device: fold_in(fold_in(rng, step), device)."""
  return jax.random.fold_in(jax.random.fold_in(state.rng, state.step),
                            jax.lax.axis_index('data'))


def channels(model_config) -> tuple[int, int]:
  """(input_nc, output_nc): domain A's (the input's) and domain B's channels."""
  return model_config.input_nc, model_config.output_nc


def single_generator(model_config) -> dict:
  """{'gen': input_nc -> output_nc channels}, as the official define_G: the
  generators of a family with one (pix2pix, CUT)."""
  return {'gen': models.create_generator(model_config)}


def single_generator_channels(model_config, network: str) -> tuple[int, int]:
  del network
  return channels(model_config)


def a_to_b_channels(config) -> dict[str, int]:
  """Domain A read with input_nc channels, B with output_nc."""
  input_nc, output_nc = channels(config.model)
  return {'A': input_nc, 'B': output_nc}


def one_by_one(fn, images):
  """fn on batches of one image, the results stacked: one image per forward
  pass, as translate and evaluate do (with batch norm an image's translation
  depends on the others in its batch)."""
  return jax.tree.map(lambda *parts: np.concatenate(parts), *[fn(x[None]) for x in images])


def grid_row(*images) -> np.ndarray:
  """Images side by side, as 8-bit-range RGB for viewing (image_io.for_viewing)."""
  return np.concatenate([image_io.for_viewing(np.asarray(x)) for x in images], axis=1)


@contextlib.contextmanager
def one_size(split: str, data_config):
  """Names the split and the cause when its test images cannot be stacked."""
  try:
    yield
  except input_pipeline.BadImageError:
    raise
  except ValueError as e:  # np.stack of images of several sizes.
    raise ValueError(f'{split}: config.data.preprocess={data_config.preprocess!r} gives test '
                     'images of different sizes; FID/KID need one size (use '
                     'resize_and_crop or crop)') from e


def unpaired_test_images(config, channels, num_images: int) -> dict:
  """{'A', 'B'}: the first num_images (0: all) preprocessed test images of
  each domain, at least two, of one size (FID/KID's test sets of CycleGAN
  and CUT)."""
  data = config.data
  sources = input_pipeline.open_sources(data, channels)
  real = {}
  for domain in 'AB':
    split = 'test' + domain
    with one_size(split, data):
      images = input_pipeline.test_images(sources[split], data,
                                          num_images or len(sources[split]))
    real[domain] = at_least_two(images, split, num_images)
  return real


def at_least_two(images: np.ndarray, split: str, num_images: int) -> np.ndarray:
  if len(images) < 2:
    raise ValueError(f'{split}: {len(images)} test image (config.eval.num_images='
                     f'{num_images}); FID and KID need at least 2')
  return images


@dataclasses.dataclass(frozen=True)
class ResultsTable:
  """One table of the results page, as data: results_page.py writes its
  images under images/ and its HTML."""
  heading: str
  titles: tuple[str, ...]  # Column titles, after the image-name column.
  # Per row: (its label, [(file name of a cell's image, the image), ...]);
  # images are uint8 or floats in [-1, 1].
  rows: list


def row_label(source, index: int, direction: str | None = None) -> str:
  """The name of a test image's row: its file's (a pair's input file's)."""
  files = getattr(source, 'files', None)  # Folder sources know their file names.
  if not files:
    return f'#{index}'
  name = files[index]
  if isinstance(name, tuple):  # A pair of files matched by name: the input's.
    name = paired_data.input_and_target(name, direction)[0]
  return os.path.basename(name)
