"""FID and KID of the test-split translations, both directions.

  python main.py --mode=evaluate --workdir=runs/h2z [--step=N]

translates the test images of each domain (the test transform of the stored
config: resize to crop_size, no flip) and scores A->B against the real test B
images and B->A against the real test A images, with pytorch-fid's
Inception-v3 (cyclegan_jax.inception) and the statistics of cyclegan_jax.fid.
The scores are printed, written to `<workdir>/eval/step_<step>.json` (and
`eval/latest.json`), and logged to TensorBoard as `eval/AtoB/fid`, ...

The training loop uses `Evaluator` directly: built once, it scores any
generator parameters.
"""

import functools
import json
import os

from clu import metric_writers
import jax
import numpy as np

from cyclegan_jax import checkpoints
from cyclegan_jax import fid
from cyclegan_jax import inception
from cyclegan_jax import inception_weights
from cyclegan_jax import input_pipeline
from cyclegan_jax import models

# (name, real images translated, real images compared with): A->B is scored
# against the real B images, B->A against the real A images.
DIRECTIONS = (('AtoB', 'A', 'B'), ('BtoA', 'B', 'A'))

# configs/default.py's config.eval, for a config.json written before it existed.
EVAL_DEFAULTS = dict(inception_weights='', num_images=0, batch_size=50, kid_subsets=100,
                     kid_subset_size=1000)

WEIGHTS_HELP = ('write a weights file once with `python -m cyclegan_jax.inception_weights '
                '--source=... --output=PATH` (see the README) and pass '
                '--inception_weights=PATH, or --config.eval.inception_weights=PATH when training')


def eval_config(config) -> dict:
  return {**EVAL_DEFAULTS, **config.get('eval', {})}


def weights_path(path: str) -> str:
  """The Inception weights file to load; one-line errors when there is none."""
  if not path:
    raise ValueError('config.eval.inception_weights is empty: FID and KID need the FID '
                     f'Inception-v3 weights (pytorch-fid\'s); {WEIGHTS_HELP}')
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such Inception weights file; {WEIGHTS_HELP}')
  return path


def load_inception(path: str):
  """The FID Inception variables (inception.init_variables' structure)."""
  return inception_weights.load(weights_path(path))


@functools.partial(jax.jit, static_argnums=0)
def _generate(generator, params, images):
  return generator.apply({'params': params}, images, train=False)


def _batched(fn, images: np.ndarray, batch_size: int) -> np.ndarray:
  """fn over batches of exactly `batch_size` rows: the last batch is padded
  with copies of its last image and the padding dropped again, so each jitted
  function compiles once, whatever the number of images. (Padding is
  harmless: instance norm and Inception's stored BN statistics work per image.)"""
  outputs = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    pad = batch_size - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
    outputs.append(np.asarray(fn(chunk))[:batch_size - pad])
  return np.concatenate(outputs)


class Evaluator:
  """FID/KID of generator parameters on the test split, for evaluate_workdir
  and for evaluation during training.

    evaluator = Evaluator(config, models.create_generator(config.model))
    metrics = evaluator(params_ab, params_ba)
    # {'AtoB': {'fid', 'kid_mean', 'kid_std', 'num_fake', 'num_real'}, 'BtoA': {...}}

  The constructor does the work that does not depend on the parameters, once:
  it loads the Inception weights (`inception_weights` overrides
  config.eval.inception_weights; errors name what is missing), the first
  config.eval.num_images (0: all) test images of each domain, and the
  Inception features of the real images. A call translates those images and
  scores them; every call runs the same compiled functions. Every process of
  a multi-process run must call it (the parameters may be global arrays);
  each computes the same scores.
  """

  def __init__(self, config, generator, inception_weights: str | None = None):
    self.settings = eval_config(config)
    self.variables = load_inception(inception_weights or self.settings['inception_weights'])
    self.generator = generator
    sources = input_pipeline.open_sources(config.data)
    # uint8, the pixels an image file holds: the translations are rounded to
    # uint8 too, as when the standard tools score saved PNGs.
    self.real = {domain: input_pipeline.to_uint8(self._test_images(config, sources, domain))
                 for domain in 'AB'}
    self.batch_size = min(self.settings['batch_size'], max(map(len, self.real.values())))
    self.real_features = {domain: self.features(images) for domain, images in self.real.items()}

  def _test_images(self, config, sources, domain: str) -> np.ndarray:
    split = 'test' + domain
    count = self.settings['num_images'] or len(sources[split])
    try:
      images = input_pipeline.test_images(sources[split], config.data, count)
    except input_pipeline.BadImageError:
      raise
    except ValueError as e:  # np.stack of images of several sizes.
      raise ValueError(f'{split}: config.data.preprocess={config.data.preprocess!r} gives test '
                       'images of different sizes; FID/KID need one size (use '
                       'resize_and_crop or crop)') from e
    if len(images) < 2:
      raise ValueError(f'{split}: {len(images)} test image (config.eval.num_images='
                       f'{self.settings["num_images"]}); FID and KID need at least 2')
    return images

  def features(self, images_uint8: np.ndarray) -> np.ndarray:
    """(N, 2048) Inception features of uint8 images."""
    return _batched(
        lambda x: inception.features(self.variables, x.astype(np.float32) / 255.0),
        images_uint8, self.batch_size)

  def translate(self, params, images_uint8: np.ndarray) -> np.ndarray:
    """uint8 images -> translated uint8 images."""
    return _batched(
        lambda x: input_pipeline.to_uint8(
            _generate(self.generator, params, x.astype(np.float32) / 127.5 - 1.0)),
        images_uint8, self.batch_size)

  def __call__(self, params_ab, params_ba) -> dict:
    params = {'A': params_ab, 'B': params_ba}  # The generator that translates each domain.
    metrics = {}
    for name, source, target in DIRECTIONS:
      fake = self.features(self.translate(params[source], self.real[source]))
      real = self.real_features[target]
      kid_mean, kid_std = fid.kernel_inception_distance(
          fake, real, self.settings['kid_subsets'], self.settings['kid_subset_size'])
      metrics[name] = {'fid': fid.fid_from_features(fake, real), 'kid_mean': kid_mean,
                       'kid_std': kid_std, 'num_fake': len(fake), 'num_real': len(real)}
    return metrics


def scalars(metrics: dict) -> dict:
  """{'eval/AtoB/fid': ..., ...}: the scores for a metric writer."""
  return {f'eval/{name}/{key}': value for name, _, _ in DIRECTIONS
          for key, value in metrics[name].items() if not key.startswith('num_')}


def summary_lines(step: int, metrics: dict) -> list[str]:
  """One readable line per direction."""
  lines = []
  for name, source, target in DIRECTIONS:
    m = metrics[name]
    lines.append(f'step {step} {name}: FID {m["fid"]:.4f}, KID {m["kid_mean"]:.6f} ± '
                 f'{m["kid_std"]:.6f} ({m["num_fake"]} translated test{source} images vs '
                 f'{m["num_real"]} real test{target} images)')
  return lines


def write_json(workdir: str, result: dict) -> str:
  """Writes eval/step_<step>.json and eval/latest.json (atomically: a kill
  mid-write leaves the old file); returns the first path."""
  folder = os.path.join(os.path.abspath(workdir), 'eval')
  os.makedirs(folder, exist_ok=True)
  text = json.dumps(result, indent=2) + '\n'
  paths = [os.path.join(folder, f'step_{result["step"]:08d}.json'),
           os.path.join(folder, 'latest.json')]
  for path in paths:
    with open(path + '.tmp', 'w') as f:
      f.write(text)
    os.replace(path + '.tmp', path)
  return paths[0]


def evaluate_workdir(workdir: str, step: int | None = None,
                     inception_weights: str | None = None) -> dict:
  """Scores the latest (or `step`) checkpoint of a workdir; returns
  {'step': s, 'AtoB': {...}, 'BtoA': {...}} after printing, writing and
  logging it. `inception_weights` overrides the config's (config.json is
  fixed once written)."""
  config = checkpoints.load_config(workdir)
  # Before the slow work: the weights file exists.
  weights = weights_path(inception_weights or eval_config(config)['inception_weights'])
  step, params = checkpoints.load_params(workdir, ('gen_ab', 'gen_ba'), step)
  evaluator = Evaluator(config, models.create_generator(config.model), weights)
  result = {'step': int(step), **evaluator(params['gen_ab'], params['gen_ba'])}
  for line in summary_lines(step, result):
    print(line, flush=True)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() != 0)
  writer.write_scalars(step, scalars(result))
  writer.close()
  if jax.process_index() == 0:
    print(f'Wrote {write_json(workdir, result)}', flush=True)
  return result
