"""FID and KID of the test-split translations.

  python main.py --mode=evaluate --workdir=runs/h2z [--step=N]

translates the test images (the test transform of the stored config: resize
to crop_size, no flip) and scores them with the FID Inception-v3
(cyclegan_jax.inception) and the statistics of cyclegan_jax.fid, in one of
the field's two protocols (config.eval.fid_mode, or --fid_mode):
- legacy: pytorch-fid's preprocessing (bilinear resize to 299 without
  antialiasing), what most CycleGAN/CUT papers report;
- clean: clean-fid's (PIL bicubic with antialiasing on float pixels).
It scores
- CycleGAN, both directions: A->B against the real test B images, B->A
  against the real test A images;
- pix2pix, the one direction it was trained for (config.data.direction): the
  translated inputs of the test pairs against the real targets of the same
  pairs.
The scores are printed, written with their protocol (FID mode, image counts,
test split, the Inception weights' SHA-256, the step) to
`<workdir>/eval/step_<step>.json` (and `eval/latest.json`), and logged to
TensorBoard as `eval/AtoB/fid`, ... A --fid_mode other than the config's
writes to `eval/<mode>/` and logs `eval/<mode>/AtoB/fid`, ..., so the
scores of the config's mode stay as they are.

The training loop uses `Evaluator` directly: built once, it scores any
generator parameters.
"""

import functools
import hashlib
import json
import os

from clu import metric_writers
import jax
from jax.sharding import PartitionSpec as P
import numpy as np

from cyclegan_jax import curves
from cyclegan_jax import families
from cyclegan_jax import fid
from cyclegan_jax import generation
from cyclegan_jax import image_io
from cyclegan_jax import inception
from cyclegan_jax import inception_weights
from cyclegan_jax import inference
from cyclegan_jax import storage
from cyclegan_jax.data import input_pipeline

# (name, real images translated, real images compared with): A->B is scored
# against the real B images, B->A against the real A images. A pix2pix model
# is scored in one of the two.
DIRECTIONS = (('AtoB', 'A', 'B'), ('BtoA', 'B', 'A'))
FID_MODES = inception.FID_MODES

WEIGHTS_HELP = ('write a weights file once with `python -m cyclegan_jax.inception_weights '
                '--source=... --output=PATH` (see docs/evaluation.md) and pass '
                '--inception_weights=PATH, or --config.eval.inception_weights=PATH when training')


def weights_path(path: str) -> str:
  """The Inception weights file to load; one-line errors when there is none."""
  if not path:
    raise ValueError('config.eval.inception_weights is empty: FID and KID need the FID '
                     f'Inception-v3 weights (pytorch-fid\'s); {WEIGHTS_HELP}')
  path = path if storage.is_remote(path) else os.path.expanduser(path)
  if not storage.isfile(path):
    raise FileNotFoundError(f'{path}: no such Inception weights file; {WEIGHTS_HELP}')
  return path


def check_fid_mode(mode: str) -> str:
  if mode not in FID_MODES:
    raise ValueError(f'fid_mode={mode!r}: expected one of {", ".join(FID_MODES)} (legacy: '
                     'pytorch-fid\'s preprocessing; clean: clean-fid\'s)')
  return mode


def file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with storage.open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def scored_test_data(config) -> dict:
  """Which test images are scored: their source, the split, the size after the
  test transform, and how many per domain were asked for (0: all)."""
  data = config.data
  source = (data.image_dir or (f'builtin:{data.builtin}' if data.builtin else '')
            or f'tfds:{data.tfds_name}')
  return {'source': source, 'split': 'test', 'size': int(data.crop_size),
          'num_images': int(config.eval.num_images)}


def load_inception(path: str):
  """The FID Inception variables (inception.init_variables' structure)."""
  with storage.local_file(weights_path(path)) as local:
    return inception_weights.load(local)


def directions(config) -> tuple[tuple[str, str], ...]:
  """((direction, checkpointed generator that translates it), ...) scored for
  config.model.kind: CycleGAN's AtoB and BtoA, or the one direction a pix2pix
  model was trained for (as --mode=translate chooses)."""
  return families.get(config).directions(config)


def translate_batch_size(config) -> int:
  """Images per generator forward pass when evaluating.

  1 with batch norm (pix2pix's), whatever config.model.kind: it normalises
  with the statistics of the batch it is given, at test time too, so an
  image's translation would depend on the other images of its batch (and on
  the padding copies of a last batch). The official test script runs batch 1,
  as do --mode=translate and the results page; one image per pass gives their
  translations. Likewise with test-time dropout, whose masks (drawn from
  generation.TEST_DROPOUT_SEED) depend on the shape of the batch. Instance norm
  works per image: config.eval.batch_size images per pass.
  """
  model = config.model
  if model.norm == 'batch' or (model.dropout and model.dropout_at_test):
    return 1
  return config.eval.batch_size


def _batched(fn, images: np.ndarray, batch_size: int) -> np.ndarray:
  """fn over batches of exactly `batch_size` rows: the last batch is padded
  with copies of its last image and the padding dropped again, so each jitted
  function compiles once, whatever the number of images. (Padding is harmless
  only for a fn that works per image, like instance norm and Inception with
  its stored BN statistics; see translate_batch_size.)"""
  outputs = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    pad = batch_size - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
    outputs.append(np.asarray(fn(chunk))[:batch_size - pad])
  return np.concatenate(outputs)


@functools.lru_cache(maxsize=32)
def _data_parallel(fn, devices: tuple, *static):
  """fn(*static, constants, images) data-parallel over `devices` (a `data`
  mesh): the constants on every device, the images split between them, each
  device running fn on its own rows, the program one device alone runs. So
  an image's result is the one a single device gives on the same rows,
  whatever the number of devices."""
  mesh = jax.sharding.Mesh(np.asarray(devices), ('data',))
  program = jax.jit(jax.shard_map(lambda constants, images: fn(*static, constants, images),
                                  mesh=mesh, in_specs=(P(), P('data')), out_specs=P('data')))

  def run(constants, images):
    put = lambda tree, spec: jax.device_put(tree, jax.NamedSharding(mesh, spec))
    return program(put(constants, P()), put(images, P('data')))
  return run


def _devices(devices) -> tuple:
  return tuple(devices) if devices else tuple(jax.local_devices())


def translate_images(generator, params, images: np.ndarray, batch_size: int,
                     devices=None, every_step: bool = False) -> np.ndarray:
  """uint8 images, or floats in [-1, 1] (the test transform's output, at full
  precision) -> translated uint8 images (generation: test mode, the fixed
  test-time dropout key), `batch_size` images per forward pass on each of
  `devices` (default: this process's), which share the images between them.
  `every_step` (a generator that translates in steps): (N, steps, H, W, C),
  the translation after each step."""
  if images.dtype == np.uint8:
    images = image_io.to_unit(images, 0, 255)
  devices = _devices(devices)
  apply = generation.apply_every_step if every_step else generation.apply_in_test_mode
  generate = _data_parallel(apply, devices, generator)
  return _batched(lambda x: input_pipeline.to_uint8(generate(params, x)), images,
                  batch_size * len(devices))


def scored_images(config, num_images: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{direction: (test images to translate, as floats in [-1, 1], uint8 real
  test images the translations are compared with)} for the directions() of
  config.model.kind (uint8, the pixels an 8-bit image file holds: the
  translations are rounded to uint8 too, as when the standard tools score
  saved PNGs; 16-bit data is translated at full precision, scored in 8 bits):
  the first num_images (0: all) images of the test split, test transform.
  CycleGAN: (test A, test B) for AtoB, (test B, test A) for BtoA. pix2pix:
  (inputs, targets) of the same test pairs (paired_data.input_and_target)."""
  return families.get(config).scored_images(config, num_images)


class Evaluator:
  """FID/KID of generator parameters on the test split, for evaluate_workdir
  and for evaluation during training, for either config.model.kind.

    evaluator = Evaluator(config, families.get(config).create_generators(config.model))
    metrics = evaluator({name: params[name] for name in evaluator.networks})
    # CycleGAN (networks ('gen_ab', 'gen_ba')): {'AtoB': {'fid', 'kid_mean',
    # 'kid_std', 'num_fake', 'num_real'}, 'BtoA': {...}, 'protocol': {...}};
    # pix2pix (networks ('gen',)): {config.data.direction: {...}, 'protocol'}.

  The constructor does the work that does not depend on the parameters, once:
  it loads the Inception weights (`inception_weights` overrides
  config.eval.inception_weights; errors name what is missing), the first
  config.eval.num_images (0: all) test images of each domain (pix2pix: test
  pairs), and the Inception features of the real images compared with, in
  the FID protocol `fid_mode` (default config.eval.fid_mode). A
  call translates the test inputs and scores them; every call runs the same
  compiled functions. Every process of a multi-process run must call it (the
  parameters may be global arrays); each computes the same scores.
  """

  def __init__(self, config, generators, inception_weights: str | None = None,
               fid_mode: str | None = None, nfe: int | None = None):
    self.settings = config.eval
    self.fid_mode = check_fid_mode(fid_mode or self.settings['fid_mode'])
    weights = weights_path(inception_weights or self.settings['inception_weights'])
    self.variables = load_inception(weights)
    # What a score means, written beside it (the step and image counts too).
    self.protocol = {'fid_mode': self.fid_mode, 'test_data': scored_test_data(config),
                     'inception_weights_sha256': file_sha256(weights),
                     'kid_subsets': int(self.settings['kid_subsets']),
                     'kid_subset_size': int(self.settings['kid_subset_size'])}
    self.generators = generators  # {network: module}: the family's create_generators.
    # A generator that translates in steps (UNSB) is scored after each step
    # (NFE 1..T) unless one NFE was asked for (--nfe: its module has it).
    self.every_step = nfe is None
    self.directions = directions(config)  # ((direction, network), ...)
    self.networks = tuple(network for _, network in self.directions)
    self.translate_batch_size = translate_batch_size(config)
    images = scored_images(config, self.settings['num_images'])
    self.inputs = {name: inputs for name, (inputs, _) in images.items()}
    self.batch_size = min(self.settings['batch_size'],
                          max(len(x) for pair in images.values() for x in pair))
    # Features of each distinct real image set once (CycleGAN's test A images
    # are BtoA's targets, pix2pix's only set is its targets).
    features = {}
    self.real_features = {}
    for name, (_, targets) in images.items():
      if id(targets) not in features:
        features[id(targets)] = self.features(targets)
      self.real_features[name] = features[id(targets)]

  def features(self, images_uint8: np.ndarray, devices=None) -> np.ndarray:
    """(N, 2048) Inception features of uint8 images (gray ones seen as RGB),
    with the preprocessing of self.fid_mode, eval.batch_size images a pass on
    each of `devices` (default: this process's)."""
    devices = _devices(devices)
    if self.fid_mode == 'clean':
      features = _data_parallel(inception.features_clean, devices)
      prepare = lambda x: inception.resize_clean(image_io.for_viewing(x))
    else:
      features = _data_parallel(inception.features, devices)
      prepare = lambda x: image_io.for_viewing(x).astype(np.float32) / 255.0
    return _batched(lambda x: np.asarray(features(self.variables, prepare(x))), images_uint8,
                    self.batch_size * len(devices))

  def translate(self, network: str, params, images: np.ndarray, devices=None,
                every_step: bool = False) -> np.ndarray:
    """Images -> translated uint8 images, translate_batch_size at a time on
    each of `devices` (`every_step`: (N, steps, H, W, C))."""
    return translate_images(self.generators[network], params, images,
                            min(self.translate_batch_size, self.batch_size), devices,
                            every_step)

  def scores(self, name: str, translated: np.ndarray, devices=None) -> dict:
    """FID and KID of uint8 translations against direction `name`'s real images."""
    fake = self.features(translated, devices)
    real = self.real_features[name]
    kid_mean, kid_std = fid.kernel_inception_distance(
        fake, real, self.settings['kid_subsets'], self.settings['kid_subset_size'])
    return {'fid': fid.fid_from_features(fake, real), 'kid_mean': kid_mean, 'kid_std': kid_std,
            'num_fake': len(fake), 'num_real': len(real)}

  def scores_by_step(self, name: str, network: str, params, devices=None) -> dict:
    """A generator that translates in steps, scored after each one: the
    scores of the NFE it translates with by default (its nfe, 0: all T) with
    'nfe', 'by_nfe' ({'1': {'fid', 'kid_mean', 'kid_std'}, ...}) and
    'best_nfe' (the lowest FID's). One chain gives every step's translation."""
    every = self.translate(network, params, self.inputs[name], devices, every_step=True)
    by_nfe = {n + 1: self.scores(name, every[:, n], devices) for n in range(every.shape[1])}
    default = self.generators[network].nfe or every.shape[1]
    return {**by_nfe[default], 'nfe': default,
            'by_nfe': {str(n): {key: s[key] for key in ('fid', 'kid_mean', 'kid_std')}
                       for n, s in by_nfe.items()},
            'best_nfe': min(by_nfe, key=lambda n: by_nfe[n]['fid'])}

  def __call__(self, params: dict, devices=None) -> dict:
    """{network name: params} (at least self.networks) -> {direction: scores},
    the test images shared between `devices` (default: this process's; in
    training, those of the run's row), each with the batches one device
    alone would take, so the scores do not depend on their number."""
    missing = [name for name in self.networks if name not in params]
    if missing:
      raise KeyError(f'Evaluator needs the parameters of {", ".join(self.networks)}; '
                     f'missing {", ".join(missing)}')
    metrics = {}
    for name, network in self.directions:
      generator = self.generators[network]
      if generation.draws_noise(generator) and self.every_step:
        metrics[name] = self.scores_by_step(name, network, params[network], devices)
        continue
      metrics[name] = self.scores(
          name, self.translate(network, params[network], self.inputs[name], devices), devices)
      if generation.draws_noise(generator):
        metrics[name]['nfe'] = generator.nfe or generator.num_timesteps
    metrics['protocol'] = self.protocol
    return metrics


def _scored(metrics: dict):
  """(direction, source domain, target domain) of the directions in metrics."""
  return [d for d in DIRECTIONS if d[0] in metrics]


def scalars(metrics: dict, prefix: str = 'eval') -> dict:
  """{'eval/AtoB/fid': ..., ...}: the scores for a metric writer (one or two
  directions; other keys, such as 'step' and 'protocol', are ignored)."""
  found = {}
  for name, _, _ in _scored(metrics):
    for key, value in metrics[name].items():
      if key == 'by_nfe':  # eval/AtoB/nfe_1/fid, ...
        found.update({f'{prefix}/{name}/nfe_{n}/{k}': v for n, scores in value.items()
                      for k, v in scores.items()})
      elif not key.startswith('num_'):
        found[f'{prefix}/{name}/{key}'] = value
  return found


def summary_lines(step: int, metrics: dict) -> list[str]:
  """One readable line per direction in metrics."""
  lines = []
  mode = metrics.get('protocol', {}).get('fid_mode')
  for name, source, target in _scored(metrics):
    m = metrics[name]
    nfe = f' at NFE {m["nfe"]}' if 'nfe' in m else ''
    lines.append(f'step {step} {name}{nfe}: FID{f" ({mode})" if mode else ""} {m["fid"]:.4f}, '
                 f'KID {m["kid_mean"]:.6f} ± '
                 f'{m["kid_std"]:.6f} ({m["num_fake"]} translated test{source} images vs '
                 f'{m["num_real"]} real test{target} images)')
    if 'by_nfe' in m:
      lines.append(f'step {step} {name} FID by NFE: ' + ', '.join(
          f'{n}: {s["fid"]:.4f}' for n, s in m['by_nfe'].items())
                   + f' (best: NFE {m["best_nfe"]})')
  return lines


def write_json(workdir: str, result: dict, subfolder: str = '') -> str:
  """Writes eval/[subfolder/]step_<step>.json and latest.json beside it
  (atomically: a kill mid-write leaves the old file); returns the first path."""
  folder = storage.join(storage.absolute(workdir), 'eval', subfolder)
  storage.makedirs(folder)
  text = json.dumps(result, indent=2) + '\n'
  paths = [storage.join(folder, f'step_{result["step"]:08d}.json'),
           storage.join(folder, 'latest.json')]
  for path in paths:
    storage.write_text_atomically(path, text)
  return paths[0]


def _read_json(path: str):
  if not storage.isfile(path):
    return None
  return json.loads(storage.read_text(path))


def latest_scores(workdir: str) -> dict | None:
  """The newest eval/latest.json of a workdir (or a sweep's run folder), or None."""
  return _read_json(storage.join(workdir, 'eval', 'latest.json'))


def best_scores(workdir: str) -> dict | None:
  """eval/best.json ({direction: {'step', 'fid'}}), or None."""
  return _read_json(storage.join(workdir, 'eval', 'best.json'))


def evaluate_workdir(workdir: str, step: int | None = None,
                     inception_weights: str | None = None, run: str | None = None,
                     fid_mode: str | None = None, nfe: int | None = None,
                     seed: int | None = None) -> dict:
  """Scores the latest (or `step`) checkpoint of a workdir; returns
  {'step': s, 'AtoB': {...}, 'BtoA': {...}, 'protocol': {...}} (pix2pix: its
  one direction) after printing, writing and logging it. `inception_weights`
  and `fid_mode` override the config's (config.json is fixed once written); a
  mode other than the config's is written to eval/<mode>/. `run`: a sweep's
  run, whose scores go to its folder W/runs/<name>/. A model that translates
  in steps (UNSB) is scored after each step, NFE 1..T, or at `nfe` only;
  `seed` its noise (inference.with_sampling)."""
  config = inference.load_config(workdir, run)
  # Before the slow work: the mode is known, the weights file exists, the
  # checkpoint is there.
  mode = check_fid_mode(fid_mode or config.eval.fid_mode)
  subfolder = '' if mode == config.eval.fid_mode else mode
  weights = weights_path(inception_weights or config.eval.inception_weights)
  restored = inference.restore(workdir, inference.ALL, step, config, run, nfe,
                               seed)  # Evaluator.networks.
  workdir = inference.output_folder(workdir, run)
  step = restored.step
  evaluator = Evaluator(config, restored.modules, weights, mode, nfe)
  result = {'step': int(step), **evaluator(restored.params)}
  for line in summary_lines(step, result):
    print(line, flush=True)
  events = storage.Mirror(workdir)  # TensorBoard's writer writes local files only.
  writer = metric_writers.create_default_writer(events.local,
                                                just_logging=jax.process_index() != 0)
  writer.write_scalars(step, scalars(result, '/'.join(filter(None, ('eval', subfolder)))))
  writer.close()
  events.close()
  if jax.process_index() == 0:
    print(f'Wrote {write_json(workdir, result, subfolder)}', flush=True)
    print(f'Wrote {curves.write_plot(workdir, subfolder, os.path.basename(workdir))}',
          flush=True)
  return result
