"""translate_folder's refusals and file naming (the happy path is in test_train.py)."""

import os
import re
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from cyclegan_jax.data import input_pipeline
from cyclegan_jax import translate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def workdir(one_step_workdir):
  return one_step_workdir


def _inputs(folder, sizes):
  """Writes random images {name: (h, w)} into folder; returns {name: bytes}."""
  folder.mkdir(exist_ok=True)
  rng = np.random.default_rng(0)
  for name, (h, w) in sizes.items():
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
  return _contents(folder)


def _contents(folder):
  return {name: (folder / name).read_bytes() for name in os.listdir(folder)}


def test_missing_or_empty_input_folder_is_named(workdir, tmp_path):
  with pytest.raises(FileNotFoundError, match=f'^{tmp_path / "nowhere"}: no such folder'):
    translate.translate_folder(workdir, str(tmp_path / 'nowhere'), str(tmp_path / 'out'))
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'empty' / 'notes.txt').write_text('not an image')
  with pytest.raises(FileNotFoundError, match=f'^{tmp_path / "empty"}: no images found'):
    translate.translate_folder(workdir, str(tmp_path / 'empty'), str(tmp_path / 'out'))
  assert not (tmp_path / 'out').exists()


def test_output_folder_equal_to_the_input_folder_is_refused(workdir, tmp_path):
  inputs = tmp_path / 'in'
  before = _inputs(inputs, {'a.png': (8, 8), 'b.jpg': (9, 7)})
  (tmp_path / 'link').symlink_to(inputs)
  for output in (inputs, f'{inputs}/', tmp_path / 'link', tmp_path / 'link' / '..' / 'in'):
    with pytest.raises(ValueError, match=f'--output={output} is the input folder'):
      translate.translate_folder(workdir, str(inputs), str(output))
  assert _contents(inputs) == before


def test_unwritable_output_is_refused_before_any_work(workdir, tmp_path, monkeypatch):
  inputs = tmp_path / 'in'
  _inputs(inputs, {'a.png': (8, 8)})
  # Refusals come before the checkpoint is even read.
  monkeypatch.setattr(translate.inference.checkpoints, 'load_params',
                      lambda *args: pytest.fail('load_params called'))
  (tmp_path / 'file').write_text('')
  with pytest.raises(FileExistsError, match=f'^--output={tmp_path / "file"} is a file'):
    translate.translate_folder(workdir, str(inputs), str(tmp_path / 'file'))
  output = tmp_path / 'file' / 'out'  # Its parent is a file.
  with pytest.raises(OSError, match=f'^--output={output}: cannot create this folder or write '
                                    r'in it \(Not a directory\)'):
    translate.translate_folder(workdir, str(inputs), str(output))


def test_inputs_sharing_a_name_get_distinct_outputs(workdir, tmp_path):
  inputs = tmp_path / 'in'
  sizes = {'a.jpg': (12, 20), 'a.png': (16, 8), 'A.bmp': (8, 12), 'b.png': (10, 10)}
  before = _inputs(inputs, sizes)
  written = translate.translate_folder(workdir, str(inputs), str(tmp_path / 'out'))
  outputs = {'A.bmp': 'A.bmp.png', 'a.jpg': 'a.jpg.png', 'a.png': 'a.png.png', 'b.png': 'b.png'}
  assert sorted(os.listdir(tmp_path / 'out')) == sorted(outputs.values())
  assert written == [str(tmp_path / 'out' / outputs[name]) for name in sorted(sizes)]
  for name, output in outputs.items():
    assert np.asarray(Image.open(tmp_path / 'out' / output)).shape == (*sizes[name], 3)
  assert _contents(inputs) == before
  # A set no renaming rule can keep apart is refused, naming both files.
  with pytest.raises(ValueError, match='a.jpg and .*a.jpg.png would both be translated to '
                                       'a.jpg.png; rename one of them'):
    translate.output_names(['d/a.jpg', 'd/a.jpg.png', 'd/a.png'])


def test_a_corrupt_input_is_named(workdir, tmp_path):
  inputs = tmp_path / 'in'
  _inputs(inputs, {'a.png': (8, 8)})
  (inputs / 'b.jpg').write_text('not a jpeg')
  with pytest.raises(input_pipeline.BadImageError,
                     match=f'^{inputs / "b.jpg"}: cannot read this image'):
    translate.translate_folder(workdir, str(inputs), str(tmp_path / 'out'))


@pytest.mark.slow
def test_an_image_too_large_for_the_memory_is_refused_in_one_line(workdir, tmp_path):
  """A translation XLA says cannot fit stops before it runs, naming the file, its
  size, the memory needed and available, and what to do; the images before it
  are written, none is overwritten. Run through main.py, with the memory
  available made small: the message is one line on stderr, exit status 1."""
  inputs = tmp_path / 'in'
  _inputs(inputs, {'a.png': (8, 8), 'b.png': (64, 48)})
  script = f'''
import sys
from absl import app
from cyclegan_jax import memory
limit = 2**20  # 1 MiB: an 8x8 translation fits (0.1 MiB), a 64x48 one (2.3 MiB) not.
memory.available_bytes = lambda device=None: limit
import main
sys.argv = ['main.py', '--mode=translate', '--workdir={workdir}', '--input={inputs}',
            '--output={tmp_path / "out"}']
app.run(main.main, flags_parser=main._parse_flags)
'''
  result = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 1, result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert re.fullmatch(rf'error: {inputs / "b.png"}: translating a 48x64 image needs '
                      r'\d+\.\d MiB of memory, and 1\.0 MiB is available on cpu; resize it '
                      r'\(half the width and height needs about a quarter of the memory\) or '
                      r'translate on a machine with more memory', last), last
  assert 'Traceback' not in result.stderr
  assert sorted(os.listdir(tmp_path / 'out')) == ['a.png']


@pytest.mark.slow
def test_main_translates_in_tiles_and_refuses_a_tile_too_small(workdir, tmp_path):
  inputs = tmp_path / 'in'
  _inputs(inputs, {'a.png': (90, 70)})

  def run(*flags):
    return subprocess.run([sys.executable, 'main.py', '--mode=translate', f'--workdir={workdir}',
                           f'--input={inputs}', f'--output={tmp_path / "out"}', *flags],
                          cwd=REPO, capture_output=True, text=True, timeout=300)

  result = run('--tile=40')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(
      'error: --tile=40: this generator needs tiles of at least 80 pixels')
  assert not os.path.exists(tmp_path / 'out' / 'a.png')
  result = run('--tile=80', '--tile_stats=thumbnail')
  assert result.returncode == 0, result.stderr[-2000:]
  assert Image.open(tmp_path / 'out' / 'a.png').size == (70, 90)
