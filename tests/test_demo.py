"""--mode=demo: the page's round trip through Gradio's own client equals
--mode=translate bit for bit, bad uploads give a message and the server
serves on, the models and choices it offers, a port in use, and (with
Chromium) a browser uploading a file and seeing the translation."""

import os
import re
import socket
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip('gradio')
# pylint: disable=wrong-import-position
from gradio_client import Client, handle_file  # noqa: E402

from cyclegan_jax import demo  # noqa: E402
from cyclegan_jax import translate  # noqa: E402
from tests import synthetic  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _png_header_only(path, width: int, height: int) -> None:
  """A PNG whose header claims width x height, with one empty data chunk:
  Pillow reads its size without decoding pixels (that would fail)."""
  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data
            + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))
  with open(path, 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2,
                                                               0, 0, 0))
            + chunk(b'IDAT', zlib.compress(b'')) + chunk(b'IEND', b''))


@pytest.fixture(scope='module')
def served(one_step_workdir, tmp_path_factory):
  """(the page's URL, the workdir): --workdir served in this process."""
  port = _free_port()
  page = demo.serve([one_step_workdir], port=port, block=False)
  yield f'http://127.0.0.1:{port}/', one_step_workdir
  page.close()


def _scene(tmp_path, name, height, width, seed=0):
  path = str(tmp_path / name)
  Image.fromarray(synthetic.random_scene(np.random.default_rng(seed),
                                         max(height, width))[:height, :width]).save(path)
  return path


def test_the_round_trip_equals_translate_exactly(served, tmp_path):
  """An image through the page (Gradio's client: upload, translate, download)
  is --mode=translate's PNG bit for bit, at the input's own size, for a size
  compiled at start and one that is not; the status names model and step."""
  url, workdir = served
  client = Client(url, verbose=False)
  for height, width in ((32, 32), (37, 51)):
    folder = tmp_path / f'in_{height}'
    folder.mkdir()
    path = _scene(folder, 'scene.png', height, width, seed=height)
    shown_in, shown_out, download, status = client.predict(
        handle_file(path), os.path.basename(workdir), 'AtoB', demo.NEWEST, 1,
        api_name='/translate')
    translate.translate_folder(workdir, str(folder), str(tmp_path / f'out_{height}'))
    expected = np.asarray(Image.open(tmp_path / f'out_{height}' / 'scene.png'))
    got = np.asarray(Image.open(download))
    assert got.shape == (height, width, 3)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(np.asarray(Image.open(shown_out)), expected)
    np.testing.assert_array_equal(np.asarray(Image.open(shown_in)),
                                  np.asarray(Image.open(path)))
    assert status.startswith(f'{os.path.basename(workdir)}, AtoB, step 1'), status
  # The other direction and the step named explicitly.
  _, _, download, _ = client.predict(handle_file(path), os.path.basename(workdir), 'BtoA', '1',
                                     1, api_name='/translate')
  translate.translate_folder(workdir, str(folder), str(tmp_path / 'out_ba'), direction='BtoA')
  np.testing.assert_array_equal(np.asarray(Image.open(download)),
                                np.asarray(Image.open(tmp_path / 'out_ba' / 'scene.png')))
  # Wider than LARGE_SIDE: in tiles, as --mode=translate --tile=TILE translates it.
  wide = tmp_path / 'wide'
  wide.mkdir()
  path = _scene(wide, 'wide.png', 24, demo.LARGE_SIDE + 60, seed=7)
  _, _, download, status = client.predict(handle_file(path), os.path.basename(workdir), 'AtoB',
                                          demo.NEWEST, 1, api_name='/translate')
  assert f'in {demo.TILE}-pixel tiles' in status
  translate.translate_folder(workdir, str(wide), str(tmp_path / 'wide_out'), tile=demo.TILE)
  np.testing.assert_array_equal(np.asarray(Image.open(download)),
                                np.asarray(Image.open(tmp_path / 'wide_out' / 'wide.png')))


def test_bad_uploads_give_a_message_and_the_server_serves_on(served, tmp_path):
  url, workdir = served
  client = Client(url, verbose=False)
  model = os.path.basename(workdir)
  text = tmp_path / 'notes.png'
  text.write_text('not an image')
  _png_header_only(tmp_path / 'huge.png', 12000, 9000)
  for path, message in ((text, 'notes.png: not an image file this page can read'),
                        (tmp_path / 'huge.png', 'huge.png: 12000x9000 pixels (108 megapixels) '
                                                'is more than this page takes')):
    with pytest.raises(Exception, match=re.escape(message)):
      client.predict(handle_file(str(path)), model, 'AtoB', demo.NEWEST, 1,
                     api_name='/translate')
  good = _scene(tmp_path, 'good.png', 32, 32)
  _, _, download, _ = client.predict(handle_file(good), model, 'AtoB', demo.NEWEST, 1,
                                     api_name='/translate')
  assert np.asarray(Image.open(download)).shape == (32, 32, 3)


def test_uploads_are_checked_from_their_header_in_one_line(tmp_path):
  """Each kind of bad upload: a ValueError naming the file, or a note for an
  image the page translates after a conversion."""
  _png_header_only(tmp_path / 'empty.png', 0, 0)
  _png_header_only(tmp_path / 'huge.png', 12000, 9000)
  (tmp_path / 'text.jpg').write_text('hello')
  whole = tmp_path / 'whole.png'
  Image.new('RGB', (64, 64), (9, 99, 199)).save(whole)
  (tmp_path / 'cut.png').write_bytes(whole.read_bytes()[:60])
  for name, message in (('empty.png', 'empty.png: '), ('huge.png', 'huge.png: 12000x9000 '),
                        ('text.jpg', 'text.jpg: not an image file this page can read'),
                        ('cut.png', 'cut.png: cannot read this image \\(')):
    with pytest.raises(ValueError, match=f'^{message}') as raised:
      demo.check_upload(str(tmp_path / name))
    assert '\n' not in str(raised.value) and str(tmp_path) not in str(raised.value)
  cmyk = tmp_path / 'cmyk.jpg'
  Image.new('CMYK', (40, 30), (10, 200, 30, 0)).save(cmyk)
  assert demo.check_upload(str(cmyk)) == (30, 40, 'CMYK pixels: converted to RGB before '
                                                  'translating')
  import tifffile  # pylint: disable=import-outside-toplevel
  tifffile.imwrite(tmp_path / 'deep.tif', np.full((20, 24, 3), 40000, np.uint16))
  height, width, note = demo.check_upload(str(tmp_path / 'deep.tif'))
  assert (height, width) == (20, 24) and note.startswith('16-bit pixels: translated at that')
  wide = tmp_path / 'wide.png'
  Image.new('RGB', (demo.LARGE_SIDE + 8, 16)).save(wide)
  assert f'translated in {demo.TILE}-pixel tiles' in demo.check_upload(str(wide))[2]


def test_it_offers_each_run_of_a_sweep_and_each_checkpoint(one_step_workdir, tmp_path):
  from configs import tiny  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import train  # pylint: disable=import-outside-toplevel
  config = tiny.get_config()
  config.data.image_dir = synthetic.make_unpaired_folder(str(tmp_path / 'data'), n_train=2,
                                                         n_test=1)
  config.train.num_steps = 2
  config.checkpoint_every_steps = 1
  config.sweep.seed = (0, 1)
  sweep = str(tmp_path / 'sweep')
  train.train_and_evaluate(config, sweep)
  models = demo.list_models([one_step_workdir, sweep])
  assert [m.label for m in models] == [os.path.basename(one_step_workdir), 'sweep · seed=0',
                                       'sweep · seed=1']
  assert models[2].run == 'seed=1'
  offered = demo.choices(models[2])
  assert offered.directions == ['AtoB', 'BtoA'] and offered.steps == [2, 1]
  assert offered.num_timesteps is None
  with pytest.raises(FileNotFoundError, match='^--workdir=.*nowhere: no trained model there'):
    demo.list_models([str(tmp_path / 'nowhere')])


def test_a_port_in_use_is_one_line(one_step_workdir):
  with socket.socket() as taken:
    taken.bind(('127.0.0.1', 0))
    taken.listen()
    port = taken.getsockname()[1]
    result = subprocess.run([sys.executable, 'main.py', '--mode=demo',
                             f'--workdir={one_step_workdir}', f'--port={port}'],
                            cwd=_REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(
      f'error: --port={port}: cannot serve on 127.0.0.1:{port} (')
  assert 'Traceback' not in result.stderr


def test_a_browser_uploads_a_file_and_sees_the_translation(served, tmp_path):
  """Chromium opens the page, uploads an image, presses Translate and sees
  the translated image appear, decoded at the input's own size."""
  from tests import browser  # pylint: disable=import-outside-toplevel
  executable = browser.chromium_path()
  from playwright.sync_api import sync_playwright  # pylint: disable=import-outside-toplevel
  url, _ = served
  path = _scene(tmp_path, 'upload.png', 40, 48)
  with sync_playwright() as playwright:
    chromium = playwright.chromium.launch(executable_path=executable, headless=True)
    try:
      page = chromium.new_page()
      page.goto(url, wait_until='load')
      page.locator('input[type=file]').first.set_input_files(path)
      page.get_by_role('button', name='Translate').click()
      shown = page.locator('#translation img')
      shown.wait_for(state='visible', timeout=120_000)
      page.wait_for_function('() => { const i = document.querySelector("#translation img");'
                             ' return i && i.complete && i.naturalWidth > 0; }',
                             timeout=60_000)
      size = shown.evaluate('i => [i.naturalWidth, i.naturalHeight]')
      assert size == [48, 40]
      page.screenshot(path=str(tmp_path / 'demo.png'), full_page=True)
    finally:
      chromium.close()


def test_examples_are_offered_and_their_sizes_compiled_at_start(one_step_workdir, tmp_path):
  """--demo_examples: the folder's images (others left out) become examples,
  and the padded size of each, with the config's crop size, is compiled
  before the page serves; a missing folder is named in one line."""
  from cyclegan_jax import generation  # pylint: disable=import-outside-toplevel
  folder = tmp_path / 'examples'
  folder.mkdir()
  _scene(folder, 'b.png', 30, 45)
  _scene(folder, 'a.jpg', 20, 22)
  (folder / 'notes.txt').write_text('not an example')
  assert [os.path.basename(p) for p in demo.example_images(str(folder))] == ['a.jpg', 'b.png']
  generation._compiled_generate.clear()  # pylint: disable=protected-access
  page = demo.build([one_step_workdir], str(folder))
  page.close()
  shapes = {key[1] for key in generation._compiled_generate}  # pylint: disable=protected-access
  assert shapes == {(1, 32, 32, 3), (1, 32, 48, 3), (1, 20, 24, 3)}, shapes
  with pytest.raises(FileNotFoundError, match='^--demo_examples=.*nowhere: no such folder'):
    demo.example_images(str(tmp_path / 'nowhere'))


def test_buckets_share_one_program_per_bucket_and_translate_within_a_grey_level(
    one_step_workdir, tmp_path):
  """--demo_buckets=64: the crop's bucket is compiled at start; uploads of
  three new sizes in that bucket compile nothing more (neither a canvas nor
  an exact-size program) and each PNG is --mode=translate's within one grey
  level (tiling.translate_image_in_bucket); the page says it may differ; a
  bucket off the generator's multiple is one line from main.py."""
  from cyclegan_jax import generation  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import tiling  # pylint: disable=import-outside-toplevel
  tiling._compiled_canvases.clear()  # pylint: disable=protected-access
  port = _free_port()
  page = demo.serve([one_step_workdir], port=port, block=False, buckets=64)
  try:
    assert {key[1] for key in tiling._compiled_canvases} == {(1, 64, 64, 3)}  # pylint: disable=protected-access
    client = Client(f'http://127.0.0.1:{port}/', verbose=False)
    for height, width in ((37, 51), (64, 29), (50, 64)):
      folder = tmp_path / f'in_{height}'
      folder.mkdir()
      path = _scene(folder, 'scene.png', height, width, seed=height)
      exact_programs = set(generation._compiled_generate)  # pylint: disable=protected-access
      _, _, download, _ = client.predict(handle_file(path), os.path.basename(one_step_workdir),
                                         'AtoB', demo.NEWEST, 1, api_name='/translate')
      assert set(generation._compiled_generate) == exact_programs  # pylint: disable=protected-access
      assert len(tiling._compiled_canvases) == 1  # pylint: disable=protected-access
      translate.translate_folder(one_step_workdir, str(folder), str(tmp_path / f'out_{height}'))
      expected = np.asarray(Image.open(tmp_path / f'out_{height}' / 'scene.png')).astype(int)
      got = np.asarray(Image.open(download)).astype(int)
      assert got.shape == (height, width, 3)
      assert np.abs(got - expected).max() <= 1
  finally:
    page.close()
  result = subprocess.run([sys.executable, 'main.py', '--mode=demo', f'--workdir={one_step_workdir}',
                           f'--port={_free_port()}', '--demo_buckets=30'],
                          cwd=_REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      'error: --demo_buckets=30: expected 0 (off) or a positive multiple of 4 (this '
      'generator\'s downsampling factor)'), result.stderr[-2000:]
