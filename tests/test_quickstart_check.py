"""The quick start's check: the checkerboard measure on images whose answer
is known, PSNR, the test pairs rebuilt as the dataset holds them, and the
lines a finished quick start prints."""

import os

import numpy as np
import pytest
from PIL import Image

from cyclegan_jax import quickstart_check
from cyclegan_jax.data import quickstart_data


def test_the_checkerboard_measure_on_images_whose_answer_is_known():
  i, j = np.meshgrid(np.arange(8), np.arange(10), indexing='ij')
  board = 40.0 * (-1.0) ** (i + j)  # |x00 - x01 - x10 + x11| / 4 = 40 = the std.
  ramp = 3.0 * i + 5.0 * j  # Linear: no 2x2 checkerboard at all.
  images = lambda *planes: np.stack([np.repeat(p[..., None], 3, -1) for p in planes])
  assert quickstart_check.checkerboard(images(board)) == pytest.approx(1.0)
  assert quickstart_check.checkerboard(images(ramp)) == pytest.approx(0.0, abs=1e-12)
  assert quickstart_check.checkerboard(images(np.full((8, 10), 7.0))) == 0.0  # Flat.
  # Half a board on a ramp: the measure scales with the board, not the ramp's slope.
  mixed = quickstart_check.checkerboard(images(ramp + 0.5 * board))
  assert mixed == pytest.approx(20.0 / (ramp + 0.5 * board).std())
  # An odd size: the last row and column, which form no block, are left out.
  assert quickstart_check.checkerboard(images(board)[:, :7, :9]) == pytest.approx(
      quickstart_check.checkerboard(images(board)[:, :6, :8]))
  assert quickstart_check.checkerboard(images(board, ramp)) == pytest.approx(0.5)


def test_psnr():
  truth = np.full((2, 4, 4, 3), 100, np.uint8)
  assert quickstart_check.psnr(truth + 1, truth) == pytest.approx(20 * np.log10(255))
  assert quickstart_check.psnr(truth, truth) == float('inf')


def test_the_test_pairs_are_the_dataset_s_images_and_their_other_half(tmp_path):
  root = quickstart_data.build('skimage_dusk', str(tmp_path))
  pairs = quickstart_data.graded_test_pairs()
  for split, held in (('testA', 0), ('testB', 1)):
    files = sorted(os.listdir(os.path.join(root, split)))
    on_disk = np.stack([np.asarray(Image.open(os.path.join(root, split, f))) for f in files])
    np.testing.assert_array_equal(pairs[split][held], on_disk)
    np.testing.assert_array_equal(pairs[split][1], quickstart_data.dusk(pairs[split][0]))


def test_a_finished_quick_start_prints_a_line_per_direction(tmp_path, capsys):
  from configs import quickstart  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import train  # pylint: disable=import-outside-toplevel
  config = quickstart.get_config()
  config.data.cache_dir = str(tmp_path / 'cache')
  config.data.load_size, config.data.crop_size = 36, 32
  config.model.ngf = config.model.ndf = 8
  config.train.num_steps = 1
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  printed = capsys.readouterr().out.strip().splitlines()[-2:]
  assert [line.split(':')[0] for line in printed] == ['day -> dusk (AtoB)',
                                                      'dusk -> day (BtoA)']
  psnr = quickstart_check.grade_psnr(workdir)
  for line, direction in zip(printed, ('AtoB', 'BtoA')):
    model, nothing = psnr[direction]
    assert f'PSNR {model:.1f} dB against the known grade' in line
    assert f'(the inputs as they are: {nothing:.1f} dB)' in line
  ratios = quickstart_check.checkerboard_ratios(workdir)
  assert set(ratios) == {'AtoB', 'BtoA'} and all(r > 0 for r in ratios.values())
  with pytest.raises(ValueError, match="the check knows the truth of the quick start's data"):
    from configs import tiny  # pylint: disable=import-outside-toplevel
    other = tiny.get_config()
    other.data.image_dir = str(tmp_path / 'cache' / 'skimage_dusk')
    other.train.num_steps = 1
    train.train_and_evaluate(other, str(tmp_path / 'other'))
    quickstart_check.grade_psnr(str(tmp_path / 'other'))
