"""The HTML results page of --mode=test."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

from configs import tiny
from configs import tiny_pix2pix
from cyclegan_jax import generation
from cyclegan_jax.families import common
from cyclegan_jax import checkpoints
from cyclegan_jax import curves
from cyclegan_jax import models
from cyclegan_jax.data import paired_data
from cyclegan_jax import results_page
from cyclegan_jax import state as state_lib
from cyclegan_jax import train
from tests import browser
from tests import synthetic

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
  sources = re.findall(r'<img src="(images/[^"]+)"', page)
  assert len(sources) == 2 * 3 * 3  # Two directions, 3 images, real | fake | rec.
  # The shared stylesheet, and the 32 px images shown 4x (whole pixels: 128 px).
  assert f'<style>\n{results_page.STYLE}</style>' in page
  assert re.findall(r'<img [^>]*width="(\d+)" height="(\d+)">', page) == [('128', '128')] * 18
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
  assert 'curves.png' not in page  # Never evaluated: no plot.


def test_page_shows_the_training_curves_of_an_evaluated_workdir(trained, tmp_path):
  workdir = tmp_path / 'evaluated'
  shutil.copytree(trained, workdir)
  os.makedirs(workdir / 'eval')
  for step, fid in ((1, 50.0), (2, 40.0)):
    (workdir / 'eval' / f'step_{step:08d}.json').write_text(json.dumps(
        {'step': step, 'AtoB': {'fid': fid, 'kid_mean': 0.1, 'kid_std': 0.0}}))
  plot = curves.write_plot(str(workdir))
  page_path = results_page.write_results_page(str(workdir), num_test=1)
  page = open(page_path, encoding='utf-8').read()
  assert '<img src="images/curves.png" alt="FID, KID and losses over steps"' in page
  with open(plot, 'rb') as a, open(os.path.join(os.path.dirname(page_path), 'images',
                                                'curves.png'), 'rb') as b:
    assert a.read() == b.read()


def test_image_tags_scale_small_images_by_whole_factors():
  assert results_page.image_tag('a.png', 'a', (32, 32, 3)) == (
      '<img src="a.png" alt="a" width="128" height="128">')
  assert 'width="144" height="72"' in results_page.image_tag('b.png', 'b', (24, 48))  # 3x.
  assert 'width="130" height="100"' in results_page.image_tag('c.png', 'c', (100, 130))
  assert 'width="512"' in results_page.image_tag('d.png', 'd', (256, 512))


def rendered(html_path: str, screenshot: str | None = None) -> dict:
  """What headless Chromium lays out (tests/browser.py's; skips without it):
  {'images': [(src, rendered width, natural width, image-rendering)],
  'font': the body's font family, 'tables': each table's border-collapse},
  and a full-page screenshot to `screenshot` if given."""
  from playwright.sync_api import sync_playwright  # pylint: disable=import-outside-toplevel
  executable = browser.chromium_path()
  with sync_playwright() as playwright:
    chromium = playwright.chromium.launch(executable_path=executable, headless=True)
    try:
      page = chromium.new_page()
      page.goto(pathlib.Path(html_path).resolve().as_uri(), wait_until='load')
      if screenshot:
        page.screenshot(path=screenshot, full_page=True)
      return page.evaluate("""() => ({
          images: Array.from(document.images).map(i => [i.getAttribute('src'),
              i.getBoundingClientRect().width, i.naturalWidth,
              getComputedStyle(i).imageRendering]),
          font: getComputedStyle(document.body).fontFamily,
          tables: Array.from(document.querySelectorAll('table')).map(
              t => getComputedStyle(t).borderCollapse)})""")
    finally:
      chromium.close()


def check_rendered(html_path: str, min_images: int) -> dict:
  """Every image loads and each small one is shown >= 128 px wide without
  blurring; sans-serif text; ruled tables."""
  browser.check_page(html_path, min_images=min_images)
  seen = rendered(html_path)
  small = [i for i in seen['images'] if i[2] < results_page.MIN_IMAGE_WIDTH]
  assert small, seen
  for src, width, natural, rendering in small:
    assert width >= results_page.MIN_IMAGE_WIDTH and width % natural == 0, (src, width)
    assert rendering == 'pixelated', (src, rendering)
  assert 'sans-serif' in seen['font']
  assert seen['tables'] and set(seen['tables']) == {'collapse'}
  return seen


def test_page_in_a_browser_shows_small_images_large_and_sharp(trained):
  path = results_page.write_results_page(str(trained), num_test=2)
  seen = check_rendered(path, min_images=2 * 2 * 3)
  assert [w for _, w, _, _ in seen['images']] == [128] * 12


@pytest.mark.slow
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


@pytest.fixture(scope='module')
def pix2pix_workdir(tmp_path_factory):
  """A pix2pix workdir (BtoA, batch norm, test-time dropout) whose checkpoint 0
  is a whole state with random numbers for weights: all the page needs,
  without compiling initialisers or a training step (11 to 25 s on 2 busy
  cores; test_pix2pix.py and test_evaluate.py train real ones)."""
  data = synthetic.make_aligned_folder(str(tmp_path_factory.mktemp('aligned')), n_train=1,
                                       n_test=3)
  workdir = str(tmp_path_factory.mktemp('pix2pix'))
  config = tiny_pix2pix.get_config()
  config.data.image_dir = data
  config.data.direction = 'BtoA'
  abstract = jax.eval_shape(lambda: state_lib.create_state(config, (32, 32, 3), 1,
                                                           steps_per_epoch=10))
  rng = np.random.default_rng(0)
  state = jax.tree.map(lambda x: (rng.normal(0, 0.1, x.shape).astype(x.dtype)
                                  if np.issubdtype(x.dtype, np.floating)
                                  else np.zeros(x.shape, x.dtype)), abstract)
  checkpoints.save_config(config, workdir)
  manager = checkpoints.create_manager(workdir)
  checkpoints.save(manager, state)
  checkpoints.wait_until_finished(manager)
  return workdir, data, config, state.gen.params


def test_pix2pix_page_shows_input_output_and_target_of_the_test_pairs(pix2pix_workdir):
  workdir, data, config, params = pix2pix_workdir
  path = results_page.write_results_page(workdir, num_test=2)
  assert path == os.path.join(workdir, 'results', '0', 'index.html')
  page = open(path, encoding='utf-8').read()
  assert page.count('<table>') == 1 and '<h2>test: 2 pairs, BtoA</h2>' in page
  assert '<th>image</th><th>input (B)</th><th>BtoA output</th><th>target (A)</th>' in page
  sources = re.findall(r'<img src="(images/[^"]+)"', page)
  assert sources == [f'images/test_{i:04d}_{kind}.png' for i in range(2)
                     for kind in ('input', 'output', 'target')]
  shown = [np.asarray(Image.open(os.path.join(os.path.dirname(path), src))) for src in sources]
  pairs = paired_data.AlignedSource(os.path.join(data, 'test'))
  generator = models.create_generator(config.model)
  for i in range(2):
    a, b = pairs[i]  # 32 x 32 each: the test resize is a no-op.
    assert os.path.basename(pairs.files[i]) in page
    np.testing.assert_array_equal(shown[3 * i], b)  # BtoA: B is the input...
    np.testing.assert_array_equal(shown[3 * i + 2], a)  # ...and A the target.
    # The output is --mode=translate's: one image per pass, dropout's fixed key.
    np.testing.assert_array_equal(shown[3 * i + 1],
                                  generation.translate_image(generator, params, b))


def test_label_of_pairs_matched_by_name_is_the_input_file():
  source = paired_data.PairedFolderSource.__new__(paired_data.PairedFolderSource)
  source.files = [('/d/testA/x.jpg', '/d/testB/x.png')]
  assert common.row_label(source, 0, 'AtoB') == 'x.jpg'
  assert common.row_label(source, 0, 'BtoA') == 'x.png'
