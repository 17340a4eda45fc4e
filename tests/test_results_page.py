"""The HTML results page of --mode=test."""

import os
import re
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from configs import tiny
from cyclegan_jax import results_page
from cyclegan_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def trained(image_folder, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('run')
  config = tiny.get_config()
  config.data.image_dir = image_folder
  config.train.num_steps = 1
  train.train_and_evaluate(config, str(workdir))
  return workdir


def test_page_shows_real_translated_and_reconstructed_for_both_directions(trained,
                                                                          image_folder):
  path = results_page.write_results_page(str(trained), num_test=3)
  assert path == str(trained / 'results' / '1' / 'index.html')
  page = open(path, encoding='utf-8').read()
  sources = re.findall(r'<img src="(images/[^"]+)">', page)
  assert len(sources) == 2 * 3 * 3  # Two directions, 3 images, real | fake | rec.
  for src in sources:
    image = np.asarray(Image.open(os.path.join(os.path.dirname(path), src)))
    assert image.shape == (32, 32, 3)
  assert '<th>A→B→A</th>' in page and '<th>B→A→B</th>' in page
  assert sorted(os.listdir(os.path.join(image_folder, 'testA')))[0] in page
  # The real image is the test transform of the file (resize to crop_size).
  real = np.asarray(Image.open(os.path.join(os.path.dirname(path), sources[0])))
  assert sources[0] == 'images/testA_0000_real.png'
  original = Image.open(os.path.join(image_folder, 'testA',
                                     sorted(os.listdir(os.path.join(image_folder, 'testA')))[0]))
  expected = np.asarray(original.convert('RGB').resize((32, 32), Image.BICUBIC))
  assert np.max(np.abs(real.astype(int) - expected.astype(int))) <= 1


def test_command_line_test_mode(trained):
  result = subprocess.run([sys.executable, 'main.py', '--mode=test', f'--workdir={trained}',
                           '--num_test=1'], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'Wrote {trained}/results/1/index.html' in result.stdout
  bad = subprocess.run([sys.executable, 'main.py', '--mode=test', f'--workdir={trained}',
                        '--num_test=0'], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert bad.returncode == 1
  assert bad.stderr.strip().splitlines()[-1] == 'error: --num_test=0: expected at least 1'
