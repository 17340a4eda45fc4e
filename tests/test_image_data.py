"""1-channel and mixed-channel models on 16-bit and TIFF data, end to end:
training, sample grids, translation at the input's precision, the value
rule's round trip, and bit-identical resume on a 1-channel 16-bit dataset."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from configs import tiny
from cyclegan_jax import generation
from cyclegan_jax import configuration
from cyclegan_jax import families
from cyclegan_jax import checkpoints
from cyclegan_jax import image_io
from cyclegan_jax.data import input_pipeline
from cyclegan_jax import train
from cyclegan_jax import translate
from tests import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def gray16_folder(tmp_path_factory):
  return synthetic.make_gray16_folder(str(tmp_path_factory.mktemp('gray16')))


def _gray_config(image_dir, **overrides):
  config = tiny.get_config()
  config.data.image_dir = image_dir
  config.model.input_nc = config.model.output_nc = 1
  config.train.num_steps = 2
  config.update_from_flattened_dict(overrides)
  return config


@pytest.fixture(scope='module')
def gray_workdir(gray16_folder, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('gray_run'))
  train.train_and_evaluate(_gray_config(gray16_folder), workdir)
  return workdir


def test_grayscale_model_trains_on_sixteen_bit_png_and_tiff(gray16_folder, gray_workdir):
  _, params = checkpoints.load_params(gray_workdir, ('gen_ab', 'gen_ba'))
  generators = families.for_model(configuration.load(gray_workdir).model).create_generators(configuration.load(gray_workdir).model)
  for name in ('gen_ab', 'gen_ba'):  # 1 channel in, 1 channel out.
    assert params[name]['Conv_0']['kernel'].shape[2] == 1
    out = generation.generate(generators[name], params[name], np.zeros((1, 32, 32, 1)))
    assert out.shape == (1, 32, 32, 1)
  # The sample grid stays 8-bit RGB for viewing: 2 rows per domain of 3 images.
  grid = np.asarray(Image.open(os.path.join(gray_workdir, 'samples', 'step_00000002.png')))
  assert grid.dtype == np.uint8 and grid.shape == (4 * 32, 3 * 32, 3)
  assert (grid[..., 0] == grid[..., 1]).all()  # Gray, shown as RGB.
  # The batches hold the full 16-bit precision: not multiples of 1/127.5.
  sources = input_pipeline.open_sources(_gray_config(gray16_folder).data, {'A': 1, 'B': 1})
  image = sources['trainB'][0]
  assert image.dtype == np.uint16 and image.shape == (32, 32, 1)
  unit = input_pipeline.preprocess(image, _gray_config(gray16_folder).data, None)
  assert not np.allclose(unit * 127.5, np.round(unit * 127.5), atol=1e-3)


def test_translate_writes_sixteen_bit_one_channel_files(gray16_folder, gray_workdir, tmp_path):
  written = translate.translate_folder(gray_workdir, os.path.join(gray16_folder, 'testA'),
                                       str(tmp_path / 'ab'))
  assert [os.path.basename(p) for p in written] == ['0000.png', '0001.png']
  with Image.open(written[0]) as out:
    assert out.mode == 'I;16' and out.size == (32, 32)
  back = translate.translate_folder(gray_workdir, os.path.join(gray16_folder, 'testB'),
                                    str(tmp_path / 'ba'), direction='BtoA')
  assert [os.path.basename(p) for p in back] == ['0000.tif', '0001.tif']  # TIFF in, TIFF out.
  image = image_io.read(back[0])
  assert image.dtype == np.uint16 and image.shape == (32, 32, 1)
  asked = translate.translate_folder(gray_workdir, os.path.join(gray16_folder, 'testA'),
                                     str(tmp_path / 'tiff'), output_format='tiff')
  assert image_io.read(asked[0]).dtype == np.uint16 and asked[0].endswith('0000.tif')


def test_identity_round_trip_loses_at_most_one_step(gray16_folder, gray_workdir, tmp_path,
                                                    monkeypatch):
  """Through a generator that returns its input, a 16-bit image comes back
  within one 16-bit step, by the default rule and by an explicit range."""
  monkeypatch.setattr(generation, 'generate',
                      jax.jit(lambda generator, params, x: x, static_argnums=0))
  monkeypatch.setattr(generation, '_compiled_generate', {})  # None of the real generator's.
  inputs = os.path.join(gray16_folder, 'testA')
  written = translate.translate_folder(gray_workdir, inputs, str(tmp_path / 'out'))
  for path, output in zip(input_pipeline.list_images(inputs), written):
    original, translated = image_io.read(path), image_io.read(output)
    assert translated.dtype == np.uint16
    assert np.abs(translated.astype(int) - original).max() <= 1
    assert not np.array_equal(translated >> 8 << 8, translated)  # Low bytes kept.

  # 12-bit data in 16-bit files with config.data.value_range = (0, 4095).
  twelve = tmp_path / 'twelve'
  twelve.mkdir()
  pixels = np.random.default_rng(0).integers(0, 4096, (20, 24), dtype=np.uint16)
  Image.fromarray(pixels).save(twelve / 'x.png')
  ranged = tmp_path / 'ranged'
  shutil.copytree(gray_workdir, ranged)
  config = configuration.load(str(ranged))
  config.data.value_range = (0, 4095)
  with open(ranged / 'config.json', 'w') as f:
    f.write(config.to_json())
  out, = translate.translate_folder(str(ranged), str(twelve), str(tmp_path / 'out12'))
  assert np.abs(image_io.read(out)[..., 0].astype(int) - pixels).max() <= 1
  pixels[0, 0] = 5000  # Out of range: one line naming the file, nothing written.
  Image.fromarray(pixels).save(twelve / 'x.png')
  with pytest.raises(input_pipeline.BadImageError, match=f'^{twelve / "x.png"}: uint16 pixels '
                     r'from \d+ to 5000, outside config.data.value_range=\(0, 4095\)'):
    translate.translate_folder(str(ranged), str(twelve), str(tmp_path / 'out12b'))


def test_mixed_channels_rgb_to_gray(tmp_path):
  """input_nc 3, output_nc 1: the RGB B images are read as gray; G maps 3 ->
  1 channels, F 1 -> 3, and translating B gives RGB PNGs."""
  folder = synthetic.make_unpaired_folder(str(tmp_path / 'data'), n_train=4, n_test=2)
  config = tiny.get_config()
  config.data.image_dir = folder
  config.model.output_nc = 1
  config.train.lambda_identity = 0.0  # Needs equal channels (config_checks), as officially.
  config.train.num_steps = 1
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  ab = translate.translate_folder(str(tmp_path / 'run'), os.path.join(folder, 'testA'),
                                  str(tmp_path / 'ab'))
  ba = translate.translate_folder(str(tmp_path / 'run'), os.path.join(folder, 'testB'),
                                  str(tmp_path / 'ba'), direction='BtoA')
  assert Image.open(ab[0]).mode == 'L' and Image.open(ba[0]).mode == 'RGB'
  config_json = json.load(open(tmp_path / 'run' / 'config.json'))
  assert config_json['model']['output_nc'] == 1


def test_tfds_images_are_read_with_the_configured_channels():
  config = tiny.get_config()
  with tfds.testing.mock_data(num_examples=3):
    sources = input_pipeline.open_sources(config.data, {'A': 1, 'B': 3})
    assert sources['trainA'][0].shape[-1] == 1 and sources['testB'][0].shape[-1] == 3
    config.data.value_range = (0, 1)  # Not what 8-bit images hold.
    with pytest.raises(input_pipeline.BadImageError, match='cycle_gan/horse2zebra trainA '
                       r'image 0: uint8 pixels from \d+ to \d+, outside config.data.value_range'):
      input_pipeline.open_sources(config.data)['trainA'][0]


NUM_STEPS = 8


def _final_state(workdir) -> dict:
  manager = ocp.CheckpointManager(checkpoints.checkpoint_dir(str(workdir)))
  restored = manager.restore(NUM_STEPS, args=ocp.args.StandardRestore())
  return jax.tree.map(np.asarray, restored)


@pytest.mark.slow
def test_gray16_reruns_and_sigkill_resume_are_bit_identical(gray16_folder, tmp_path):
  """The reproducibility guarantees on a 1-channel 16-bit folder dataset: a
  rerun gives the same bits, and so does a run killed by SIGKILL after a
  checkpoint and resumed."""
  overrides = {'train.num_steps': NUM_STEPS, 'train.batch_size': 2, 'train.pool_size': 3,
               'checkpoint_every_steps': 2, 'keep_checkpoints': 10, 'sample_every_steps': 100,
               'log_every_steps': 2}
  train.train_and_evaluate(_gray_config(gray16_folder, **overrides), str(tmp_path / 'one'))
  train.train_and_evaluate(_gray_config(gray16_folder, **overrides), str(tmp_path / 'two'))
  reference = _final_state(tmp_path / 'one')
  assert all(np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(reference), jax.tree.leaves(_final_state(tmp_path / 'two'))))

  workdir = tmp_path / 'killed'
  command = [sys.executable, 'main.py', '--config=configs/tiny.py', f'--workdir={workdir}',
             f'--config.data.image_dir={gray16_folder}', '--config.model.input_nc=1',
             '--config.model.output_nc=1',
             *(f'--config.{field}={value}' for field, value in overrides.items())]
  process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  folder = workdir / 'checkpoints'
  deadline = time.time() + 300
  while (process.poll() is None and time.time() < deadline
         and not (folder.is_dir() and any(s.isdigit() for s in os.listdir(folder)))):
    time.sleep(0.01)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert any(s.isdigit() for s in os.listdir(folder))
  resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'Resuming from the checkpoint at step' in resumed.stderr
  assert all(np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(reference), jax.tree.leaves(_final_state(workdir))))
