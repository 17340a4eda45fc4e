"""--mode=evaluate: FID/KID of the test translations, CycleGAN's two
directions and pix2pix's one.

One tiny workdir of each kind, one evaluation of each (in subprocesses, as
users run it, both at once); the statistics themselves are test_fid.py's.
fid.fid_from_features takes 13 s or more on 2 CPU cores (scipy's sqrtm of a
2048 x 2048 matrix), so each evaluation runs once and the checks recompute
FID through the few nonzero eigenvalues.
"""

import glob
import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from configs import tiny
from configs import tiny_pix2pix
from cyclegan_jax import generation
from cyclegan_jax import configuration
from cyclegan_jax import families
from cyclegan_jax import checkpoints
from cyclegan_jax import evaluate
from cyclegan_jax import fid
from cyclegan_jax import inception
from cyclegan_jax import inception_weights
from cyclegan_jax.data import input_pipeline
from cyclegan_jax import models
from cyclegan_jax import train
from tests import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_IMAGES, KID_SUBSETS, KID_SUBSET_SIZE = 3, 5, 2  # Of the 4 test images per domain.


def _fid_through_eigenvalues(x, y):
  """The Frechet distance of few samples: the nonzero eigenvalues of S1 S2,
  S = Xc^T Xc / (n - 1), are those of the small (Xc Yc^T)(Yc Xc^T) / ((n1-1)(n2-1)).
  (Agrees with fid.fid_from_features to ~2e-7 relative on 3-4 samples.)"""
  xc, yc = x - x.mean(0), y - y.mean(0)
  small = xc @ yc.T
  eigenvalues = np.linalg.eigvals(small @ small.T).real / ((len(x) - 1) * (len(y) - 1))
  diff = x.mean(0) - y.mean(0)
  return (diff @ diff + (xc**2).sum() / (len(x) - 1) + (yc**2).sum() / (len(y) - 1)
          - 2 * np.sqrt(np.clip(eigenvalues, 0, None)).sum())


def _start_main(*args):
  # One OpenBLAS thread: scipy's sqrtm ran 2.4-3.7x slower with two (13.7 s
  # against 32-51 s per FID) on a 2-core machine busy with other work.
  return subprocess.Popen([sys.executable, 'main.py', *args], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          env={**os.environ, 'OPENBLAS_NUM_THREADS': '1'})


def _finish(process) -> subprocess.CompletedProcess:
  try:
    stdout, stderr = process.communicate(timeout=300)
  except subprocess.TimeoutExpired:
    process.kill()
    raise
  return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _use_small_eval(config, weights):
  config.train.num_steps = 1
  config.eval.inception_weights = weights
  config.eval.num_images = NUM_IMAGES
  config.eval.batch_size = 2  # 3 images: a full batch, then a padded one.
  config.eval.kid_subsets = KID_SUBSETS
  config.eval.kid_subset_size = KID_SUBSET_SIZE  # < 3 images, so subsets differ.


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('inception') / 'random_fid_inception.npz')
  inception_weights.save(path, inception.init_variables(seed=0))
  return path


@pytest.fixture(scope='module')
def trained(image_folder, weights, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('run')
  config = tiny.get_config()
  config.data.image_dir = image_folder
  _use_small_eval(config, weights)
  train.train_and_evaluate(config, str(workdir))
  return workdir


@pytest.fixture(scope='module')
def aligned_folder(tmp_path_factory):
  return synthetic.make_aligned_folder(str(tmp_path_factory.mktemp('aligned')), n_train=4,
                                       n_test=4)


@pytest.fixture(scope='module')
def trained_pix2pix(aligned_folder, weights, tmp_path_factory):
  """A 1-step pix2pix run (batch norm, test-time dropout), BtoA like facades."""
  workdir = tmp_path_factory.mktemp('pix2pix')
  config = tiny_pix2pix.get_config()
  config.data.image_dir = aligned_folder
  config.data.direction = 'BtoA'
  _use_small_eval(config, weights)
  train.train_and_evaluate(config, str(workdir))
  return workdir


@pytest.fixture(scope='module')
def evaluations(trained, trained_pix2pix):
  """--mode=evaluate of both workdirs, and of the CycleGAN one in clean mode,
  the processes at once (each FID's sqrtm runs on one core). The clean one
  starts after the legacy one has written its scores."""
  processes = {kind: _start_main('--mode=evaluate', f'--workdir={workdir}')
               for kind, workdir in (('cyclegan', trained), ('pix2pix', trained_pix2pix))}
  processes['cyclegan'].wait(timeout=300)
  processes['clean'] = _start_main('--mode=evaluate', f'--workdir={trained}',
                                   '--fid_mode=clean')
  results = {kind: _finish(process) for kind, process in processes.items()}
  for result in results.values():
    assert result.returncode == 0, result.stderr[-3000:]
  return results


@pytest.fixture(scope='module')
def evaluated(evaluations):
  return evaluations['cyclegan']


def _logged_eval_scalars(workdir) -> dict:
  logged = {}
  for events in glob.glob(str(workdir / 'events.out.tfevents.*')):  # Training's and ours.
    for event in tf.compat.v1.train.summary_iterator(events):
      for value in event.summary.value:
        if value.tag.startswith('eval/'):
          logged[value.tag] = (event.step, float(tf.make_ndarray(value.tensor)))
  return logged


def _check_scores(scores, fake_features, real_features):
  """KID with the config's subsets and FID of the stored scores, recomputed."""
  kid = fid.kernel_inception_distance(fake_features, real_features, KID_SUBSETS,
                                      KID_SUBSET_SIZE)
  np.testing.assert_allclose([scores['kid_mean'], scores['kid_std']], kid, rtol=1e-4)
  assert scores['kid_std'] > 0
  # Other subset settings give other numbers: the config's were used.
  for other in ((KID_SUBSETS + 1, KID_SUBSET_SIZE), (KID_SUBSETS, KID_SUBSET_SIZE + 1)):
    assert abs(fid.kernel_inception_distance(fake_features, real_features, *other)[0]
               - kid[0]) > 1e-3 * abs(kid[0])
  np.testing.assert_allclose(
      scores['fid'], _fid_through_eigenvalues(fake_features.astype(np.float64),
                                              real_features.astype(np.float64)), rtol=1e-4)


def _check_protocol(protocol, mode, workdir):
  """What the scores mean: the mode, the test data, the weights file's hash
  and the KID settings."""
  config = configuration.load(workdir)
  with open(config.eval.inception_weights, 'rb') as f:
    sha256 = hashlib.sha256(f.read()).hexdigest()
  assert protocol == {'fid_mode': mode,
                      'test_data': {'source': config.data.image_dir, 'split': 'test',
                                    'size': 32, 'num_images': NUM_IMAGES},
                      'inception_weights_sha256': sha256,
                      'kid_subsets': KID_SUBSETS, 'kid_subset_size': KID_SUBSET_SIZE}


@pytest.mark.slow
def test_command_line_prints_writes_json_and_logs_to_tensorboard(trained, evaluated):
  lines = [line for line in evaluated.stdout.splitlines() if line.startswith('step 1 ')]
  assert len(lines) == 2, evaluated.stdout
  for line, (name, source, target) in zip(lines, evaluate.DIRECTIONS):
    assert re.fullmatch(rf'step 1 {name}: FID \(legacy\) \d+\.\d{{4}}, '
                        rf'KID -?\d+\.\d{{6}} ± \d+\.\d{{6}} '
                        rf'\(3 translated test{source} images vs 3 real test{target} images\)',
                        line), line
  path = trained / 'eval' / 'step_00000001.json'
  assert f'Wrote {path}' in evaluated.stdout
  result = json.loads(path.read_text())
  assert json.loads((trained / 'eval' / 'latest.json').read_text()) == result
  assert set(result) == {'step', 'AtoB', 'BtoA', 'protocol'} and result['step'] == 1
  _check_protocol(result['protocol'], 'legacy', str(trained))
  for name in ('AtoB', 'BtoA'):
    assert set(result[name]) == {'fid', 'kid_mean', 'kid_std', 'num_fake', 'num_real'}
    assert result[name]['fid'] > 0 and result[name]['num_fake'] == result[name]['num_real'] == 3
  logged = {tag: value for tag, value in _logged_eval_scalars(trained).items()
            if not tag.startswith('eval/clean/')}  # The clean mode's evaluation.
  assert logged == {f'eval/{name}/{key}': (1, pytest.approx(result[name][key], rel=1e-6))
                    for name in ('AtoB', 'BtoA') for key in ('fid', 'kid_mean', 'kid_std')}


@pytest.mark.slow
def test_scores_are_those_of_independently_computed_features(trained, evaluated, weights,
                                                             image_folder):
  """The plumbing: which generator translates which domain, compared with
  which real images, the num_images limit, the padded last batch, the KID
  subsets; images read straight from the files."""
  result = json.loads((trained / 'eval' / 'step_00000001.json').read_text())
  config = configuration.load(str(trained))
  _, params = checkpoints.load_params(str(trained), ('gen_ab', 'gen_ba'))
  generator = models.create_generator(config.model)
  variables = inception_weights.load(weights)
  real = {}
  for domain in 'AB':
    folder = os.path.join(image_folder, 'test' + domain)
    files = sorted(os.listdir(folder))[:NUM_IMAGES]
    real[domain] = np.stack([np.asarray(Image.open(os.path.join(folder, f)).convert('RGB'))
                             for f in files])  # Already 32x32: the test resize is a no-op.
  features = lambda uint8: np.asarray(inception.features(variables, uint8 / np.float32(255)))
  for name, source, target, network in (('AtoB', 'A', 'B', 'gen_ab'),
                                        ('BtoA', 'B', 'A', 'gen_ba')):
    fake = input_pipeline.to_uint8(generator.apply(
        {'params': params[network]}, real[source] / np.float32(127.5) - 1, train=False))
    _check_scores(result[name], features(fake), features(real[target]))


@pytest.mark.slow
def test_clean_mode_scores_clean_fid_preprocessing_beside_the_legacy_scores(
    trained, evaluations, weights, image_folder):
  """--fid_mode=clean: clean-fid's resize (PIL bicubic, tested against
  clean-fid in test_fid.py) and input scaling; written to eval/clean/ and
  logged as eval/clean/..., leaving the config's legacy scores as they are."""
  evaluated = evaluations['clean']
  lines = [line for line in evaluated.stdout.splitlines() if line.startswith('step 1 ')]
  assert len(lines) == 2 and all(' FID (clean) ' in line for line in lines), evaluated.stdout
  path = trained / 'eval' / 'clean' / 'step_00000001.json'
  assert f'Wrote {path}' in evaluated.stdout
  clean = json.loads(path.read_text())
  assert json.loads((trained / 'eval' / 'clean' / 'latest.json').read_text()) == clean
  _check_protocol(clean['protocol'], 'clean', str(trained))
  legacy = json.loads((trained / 'eval' / 'latest.json').read_text())
  assert legacy['protocol']['fid_mode'] == 'legacy'
  assert abs(clean['AtoB']['fid'] - legacy['AtoB']['fid']) > 1e-3 * legacy['AtoB']['fid']
  logged = _logged_eval_scalars(trained)
  assert logged['eval/clean/AtoB/fid'] == (1, pytest.approx(clean['AtoB']['fid'], rel=1e-6))
  assert logged['eval/AtoB/fid'] == (1, pytest.approx(legacy['AtoB']['fid'], rel=1e-6))

  config = configuration.load(str(trained))
  _, params = checkpoints.load_params(str(trained), ('gen_ab', 'gen_ba'))
  generator = models.create_generator(config.model)
  variables = inception_weights.load(weights)
  real = {domain: np.stack([
      np.asarray(Image.open(os.path.join(image_folder, 'test' + domain, f)).convert('RGB'))
      for f in sorted(os.listdir(os.path.join(image_folder, 'test' + domain)))[:NUM_IMAGES]])
          for domain in 'AB'}
  features = lambda uint8: np.asarray(inception.features_clean(
      variables, inception.resize_clean(uint8)))
  for name, source, target, network in (('AtoB', 'A', 'B', 'gen_ab'),
                                        ('BtoA', 'B', 'A', 'gen_ba')):
    fake = input_pipeline.to_uint8(generator.apply(
        {'params': params[network]}, real[source] / np.float32(127.5) - 1, train=False))
    _check_scores(clean[name], features(fake), features(real[target]))


def _test_pairs_from_files(aligned_folder):
  """(A, B) uint8 halves of the first NUM_IMAGES test files, read directly."""
  folder = os.path.join(aligned_folder, 'test')
  images = [np.asarray(Image.open(os.path.join(folder, f)).convert('RGB'))
            for f in sorted(os.listdir(folder))[:NUM_IMAGES]]
  # 32 x 64 side by side: the test resize of each half to 32 x 32 is a no-op.
  return np.stack([x[:, :32] for x in images]), np.stack([x[:, 32:] for x in images])


@pytest.mark.slow
def test_pix2pix_scores_its_one_direction_against_the_test_targets(
    trained_pix2pix, evaluations, weights, aligned_folder):
  """BtoA only: the translated B halves of the test pairs against their A
  halves, each translated alone as --mode=translate does (batch norm, and
  test-time dropout from the fixed key); printed, in JSON and TensorBoard."""
  evaluated = evaluations['pix2pix']
  lines = [line for line in evaluated.stdout.splitlines() if line.startswith('step 1 ')]
  assert len(lines) == 1, evaluated.stdout
  assert re.fullmatch(r'step 1 BtoA: FID \(legacy\) \d+\.\d{4}, KID -?\d+\.\d{6} ± \d+\.\d{6} '
                      r'\(3 translated testB images vs 3 real testA images\)', lines[0]), lines
  path = trained_pix2pix / 'eval' / 'step_00000001.json'
  assert f'Wrote {path}' in evaluated.stdout
  result = json.loads(path.read_text())
  assert json.loads((trained_pix2pix / 'eval' / 'latest.json').read_text()) == result
  assert set(result) == {'step', 'BtoA', 'protocol'} and result['step'] == 1
  _check_protocol(result['protocol'], 'legacy', str(trained_pix2pix))
  assert set(result['BtoA']) == {'fid', 'kid_mean', 'kid_std', 'num_fake', 'num_real'}
  assert result['BtoA']['num_fake'] == result['BtoA']['num_real'] == 3
  assert _logged_eval_scalars(trained_pix2pix) == {
      f'eval/BtoA/{key}': (1, pytest.approx(result['BtoA'][key], rel=1e-6))
      for key in ('fid', 'kid_mean', 'kid_std')}

  config = configuration.load(str(trained_pix2pix))
  _, params = checkpoints.load_params(str(trained_pix2pix), ('gen',))
  generator = models.create_generator(config.model)
  real_a, real_b = _test_pairs_from_files(aligned_folder)
  fake_a = np.stack([generation.translate_image(generator, params['gen'], b) for b in real_b])
  variables = inception_weights.load(weights)
  features = lambda uint8: np.asarray(inception.features(variables, uint8 / np.float32(255)))
  _check_scores(result['BtoA'], features(fake_a), features(real_a))


def test_batch_norm_models_are_translated_one_image_per_pass(trained_pix2pix, aligned_folder):
  """Batch norm uses the statistics of the batch it is given, at test time
  too: evaluation translates each image alone, giving translate_image's
  output; a batch of several would give other images."""
  config = configuration.load(str(trained_pix2pix))
  assert evaluate.directions(config) == (('BtoA', 'gen'),)
  assert evaluate.translate_batch_size(config) == 1 and config.eval.batch_size == 2
  cyclegan = tiny.get_config()
  assert evaluate.directions(cyclegan) == (('AtoB', 'gen_ab'), ('BtoA', 'gen_ba'))
  assert evaluate.translate_batch_size(cyclegan) == cyclegan.eval.batch_size
  cyclegan.model.norm = 'batch'  # Whatever the kind.
  assert evaluate.translate_batch_size(cyclegan) == 1

  _, params = checkpoints.load_params(str(trained_pix2pix), ('gen',))
  generator = models.create_generator(config.model)
  _, inputs = _test_pairs_from_files(aligned_folder)
  one_by_one = np.stack([generation.translate_image(generator, params['gen'], x)
                         for x in inputs])
  ours = evaluate.translate_images(generator, params['gen'], inputs,
                                   evaluate.translate_batch_size(config))
  np.testing.assert_array_equal(ours, one_by_one)
  batched = evaluate.translate_images(generator, params['gen'], inputs, len(inputs))
  assert np.abs(batched.astype(int) - one_by_one).max() > 8
  # The test split as the Evaluator reads it: the same pairs, input B, target A.
  (name, (x, y)), = evaluate.scored_images(config, NUM_IMAGES).items()
  assert name == 'BtoA'
  np.testing.assert_array_equal(input_pipeline.to_uint8(x), inputs)  # At full precision.
  np.testing.assert_array_equal(y, _test_pairs_from_files(aligned_folder)[0])


@pytest.mark.slow
def test_errors_name_what_is_missing(trained, weights, tmp_path):
  with pytest.raises(FileNotFoundError, match='missing.npz: no such Inception weights file; '
                     'write a weights file once with `python -m cyclegan_jax.inception_weights'):
    # The argument wins over the config's (valid) weights file.
    evaluate.evaluate_workdir(str(trained), inception_weights=str(tmp_path / 'missing.npz'))
  with pytest.raises(FileNotFoundError, match='no checkpoint at step 7'):
    evaluate.evaluate_workdir(str(trained), step=7)
  config = configuration.load(str(trained))
  config.eval.inception_weights = ''
  with pytest.raises(ValueError, match='config.eval.inception_weights is empty'):
    evaluate.Evaluator(config, families.for_model(config.model).create_generators(config.model))

  # On the command line: one line, exit status 1. A workdir without weights
  # configured (checked first: before any slow work) and one without
  # checkpoints; both processes at once, to save their start-up time.
  cases = {'no_weights': ('', 'error: config.eval.inception_weights is empty: FID and KID '
                              'need '),
           'no_checkpoint': (weights, f'error: {tmp_path}/no_checkpoint/checkpoints: no '
                                      'checkpoint')}
  processes = {}
  for name, (weights_file, _) in cases.items():
    workdir = tmp_path / name
    workdir.mkdir()
    config.eval.inception_weights = weights_file
    checkpoints.save_config(config, str(workdir))
    processes[name] = subprocess.Popen(
        [sys.executable, 'main.py', '--mode=evaluate', f'--workdir={workdir}'], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  for name, process in processes.items():
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(cases[name][1]), last
    assert '--inception_weights=PATH' in last or name == 'no_checkpoint'


_SHARDED_EVALUATION = '''
import sys
import numpy as np
from cyclegan_jax import checkpoints, configuration, evaluate, families
arrays = {}
for kind, workdir in (('cyclegan', sys.argv[2]), ('pix2pix', sys.argv[3])):
  config = configuration.load(workdir)
  evaluator = evaluate.Evaluator(config, families.get(config).create_generators(config.model))
  _, params = checkpoints.load_params(workdir, evaluator.networks)
  for name, network in evaluator.directions:
    fake = evaluator.translate(network, params[network], evaluator.inputs[name])
    arrays[f'{kind}/{name}/fake'] = fake
    arrays[f'{kind}/{name}/features'] = evaluator.features(fake)
    arrays[f'{kind}/{name}/real_features'] = evaluator.real_features[name]
np.savez(sys.argv[1], **arrays)
'''


def test_the_test_images_shared_between_devices_score_as_on_one(trained, trained_pix2pix,
                                                                 tmp_path):
  """Evaluation shares the test images between the devices, each taking the
  batches one device alone takes: on 3 devices (3 images in batches of 2: a
  device with padding only; pix2pix's one image a pass) the translations
  and Inception features equal one device's bit for bit."""
  from tests import xla_flags  # pylint: disable=import-outside-toplevel
  env = xla_flags.with_cpu_devices(3, os.environ.get('XLA_FLAGS', ''))
  result = subprocess.run([sys.executable, '-c', _SHARDED_EVALUATION, str(tmp_path / 'x.npz'),
                           str(trained), str(trained_pix2pix)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  sharded = np.load(tmp_path / 'x.npz')
  checked = 0
  for kind, workdir in (('cyclegan', trained), ('pix2pix', trained_pix2pix)):
    config = configuration.load(str(workdir))
    evaluator = evaluate.Evaluator(config, families.get(config).create_generators(config.model))
    _, params = checkpoints.load_params(str(workdir), evaluator.networks)
    for name, network in evaluator.directions:
      fake = evaluator.translate(network, params[network], evaluator.inputs[name])
      assert len(fake) == NUM_IMAGES
      np.testing.assert_array_equal(sharded[f'{kind}/{name}/fake'], fake)
      np.testing.assert_array_equal(sharded[f'{kind}/{name}/features'], evaluator.features(fake))
      np.testing.assert_array_equal(sharded[f'{kind}/{name}/real_features'],
                                    evaluator.real_features[name])
      checked += 1
  assert checked == 3
