"""Video in, video out: every frame translated at the video's size and frame
rate, equal to the image path's translation of the same frame."""

import os
import subprocess
import sys

import numpy as np
import pytest

from cyclegan_jax import generation
from cyclegan_jax import configuration
from cyclegan_jax import families
from cyclegan_jax import checkpoints
from cyclegan_jax import video
from tests import synthetic

iio = pytest.importorskip('imageio.v2')  # The "export" extra, which .ci/run installs.

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FPS = 12.5
WIDTH, HEIGHT = 30, 22  # Not multiples of the generator's 4: padded and cropped back.


@pytest.fixture(scope='module')
def clip(tmp_path_factory):
  """Five synthetic frames as a lossless FFV1 .mkv (so its decoded frames are
  exactly these) -> (path, frames)."""
  rng = np.random.default_rng(0)
  frames = np.stack([synthetic.random_scene(rng, 32)[:HEIGHT, :WIDTH] for _ in range(5)])
  path = str(tmp_path_factory.mktemp('video') / 'clip.mkv')
  with iio.get_writer(path, format='FFMPEG', fps=FPS, codec='ffv1', pixelformat='bgr0',
                      macro_block_size=1, ffmpeg_log_level='error') as writer:
    for frame in frames:
      writer.append_data(frame)
  return path, frames


def _read(path):
  with iio.get_reader(path, format='FFMPEG') as reader:
    return np.stack([frame for frame in reader.iter_data()]), reader.get_meta_data()


def _image_path(workdir, frames, network='gen_ab'):
  """What --mode=translate of a folder gives for each frame, one at a time."""
  _, params = checkpoints.load_params(workdir, (network,))
  generator = families.for_model(configuration.load(workdir).model).create_generators(configuration.load(workdir).model)[network]
  return np.stack([generation.translate_image(generator, params[network], f) for f in frames])


def test_a_video_is_translated_frame_by_frame(one_step_workdir, clip, tmp_path):
  path, frames = clip
  before = open(path, 'rb').read()
  expected = _image_path(one_step_workdir, frames)
  # Lossless out: the frames are the image path's, exactly (batches of 2, 2
  # and 1 frames, the last one smaller).
  out = str(tmp_path / 'out.mkv')
  assert video.translate_video(one_step_workdir, path, out, batch_size=2) == 5
  got, meta = _read(out)
  assert got.shape == (5, HEIGHT, WIDTH, 3) and meta['fps'] == FPS
  np.testing.assert_array_equal(got, expected)
  assert np.abs(got.astype(int) - frames).mean() > 1  # Translated, not copied.
  # H.264 out: the same frames within the codec's rounding.
  out = str(tmp_path / 'out.mp4')
  assert video.translate_video(one_step_workdir, path, out, 'BtoA') == 5
  got, meta = _read(out)
  assert got.shape == (5, HEIGHT, WIDTH, 3) and meta['fps'] == FPS and meta['codec'] == 'h264'
  # yuv420p keeps colour at half the resolution (the untrained generator's
  # output is mostly fine detail), brightness at full: compare that.
  luma = lambda rgb: rgb @ np.array([0.299, 0.587, 0.114])
  error = np.abs(luma(got) - luma(_image_path(one_step_workdir, frames, 'gen_ba')))
  assert error.mean() < 3, error.mean()  # 1.5 here.
  assert sorted(os.listdir(tmp_path)) == ['out.mkv', 'out.mp4']  # No partial files left.
  assert open(path, 'rb').read() == before


def test_bad_videos_and_outputs_are_refused_by_name(one_step_workdir, clip, tmp_path):
  path, _ = clip
  broken = tmp_path / 'broken.mp4'
  broken.write_bytes(b'not a video at all' * 100)
  with pytest.raises(ValueError, match=f'^--input={broken}: cannot decode this video'):
    video.translate_video(one_step_workdir, str(broken), str(tmp_path / 'out.mkv'))
  with pytest.raises(ValueError, match=f'^--output={path} is the input video'):
    video.translate_video(one_step_workdir, path, path)
  (tmp_path / 'folder.mp4').mkdir()
  with pytest.raises(IsADirectoryError, match='folder.mp4 is a folder; expected a video file'):
    video.translate_video(one_step_workdir, path, str(tmp_path / 'folder.mp4'))
  with pytest.raises(ValueError, match=r'out\.webm: expected a video file name ending in .mkv'):
    video.translate_video(one_step_workdir, path, str(tmp_path / 'out.webm'))
  # 30x22 is even; an odd size cannot be H.264 (yuv420p).
  odd = str(tmp_path / 'odd.mkv')
  with iio.get_writer(odd, format='FFMPEG', fps=FPS, codec='ffv1', pixelformat='bgr0',
                      macro_block_size=1, ffmpeg_log_level='error') as writer:
    writer.append_data(np.zeros((9, 11, 3), np.uint8))
  with pytest.raises(ValueError, match=r'H\.264 needs an even width and height, and .* is '
                                       r'11x9; write a \.mkv'):
    video.translate_video(one_step_workdir, odd, str(tmp_path / 'odd.mp4'))
  with pytest.raises(FileNotFoundError, match=f'^--input={tmp_path / "none.mp4"}: no such file'):
    video.translate_video(one_step_workdir, str(tmp_path / 'none.mp4'), str(tmp_path / 'o.mkv'))
  assert sorted(os.listdir(tmp_path)) == ['broken.mp4', 'folder.mp4', 'odd.mkv']


@pytest.mark.slow
def test_main_translates_a_video(one_step_workdir, clip, tmp_path):
  path, frames = clip
  out = tmp_path / 'out.mkv'
  done = subprocess.run([sys.executable, 'main.py', '--mode=translate',
                         f'--workdir={one_step_workdir}', f'--input={path}', f'--output={out}'],
                        cwd=REPO, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert f'Wrote {out} (5 frames)' in done.stdout
  np.testing.assert_array_equal(_read(str(out))[0], _image_path(one_step_workdir, frames))
  (tmp_path / 'notes.txt').write_text('not a video')
  refused = subprocess.run([sys.executable, 'main.py', '--mode=translate',
                            f'--workdir={one_step_workdir}', f'--input={tmp_path / "notes.txt"}',
                            f'--output={tmp_path / "o.mkv"}'],
                           cwd=REPO, capture_output=True, text=True, timeout=600)
  assert refused.returncode == 2 and 'Traceback' not in refused.stderr
  assert refused.stderr.strip().splitlines()[-1].startswith(
      f'error: --input={tmp_path / "notes.txt"}: expected a folder of images or a video (.mp4')


def test_a_missing_extra_is_named(one_step_workdir, clip, monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, 'imageio_ffmpeg', None)  # As if not installed.
  with pytest.raises(ImportError, match=r'^video translation needs the optional extra "export" '
                                        r'\(imageio_ffmpeg is missing\)'):
    video.translate_video(one_step_workdir, clip[0], str(tmp_path / 'out.mkv'))
  with pytest.raises(ValueError, match='^--batch_size=0: expected at least 1'):
    video.translate_video(one_step_workdir, clip[0], str(tmp_path / 'out.mkv'), batch_size=0)
  assert not os.listdir(tmp_path)


def test_test_time_dropout_goes_one_frame_at_a_time(one_step_workdir, clip, tmp_path):
  """With dropout at test time the masks are drawn for the batch's shape:
  frames translated in a batch would differ from the image path's."""
  import json  # pylint: disable=import-outside-toplevel
  import shutil  # pylint: disable=import-outside-toplevel
  workdir = tmp_path / 'run'
  shutil.copytree(one_step_workdir, workdir)
  config = json.loads((workdir / 'config.json').read_text())
  config['model'].update(dropout=True, dropout_at_test=True)  # No parameters change.
  (workdir / 'config.json').write_text(json.dumps(config))
  path, frames = clip
  out = str(tmp_path / 'out.mkv')
  assert video.translate_video(str(workdir), path, out, batch_size=4) == 5
  expected = _image_path(str(workdir), frames)
  np.testing.assert_array_equal(_read(out)[0], expected)
  assert np.abs(expected.astype(int) - _image_path(one_step_workdir, frames)).max() > 0


def test_frames_in_tiles_equal_whole_frames(one_step_workdir, clip, tmp_path):
  """--tile for a video: each frame tiled with whole-frame statistics (here
  one tile: 30x22 frames are smaller than an 80-pixel tile), the frames of
  the whole-frame translation within one grey level."""
  path, frames = clip
  out = str(tmp_path / 'out.mkv')
  assert video.translate_video(one_step_workdir, path, out, tile=80) == 5
  got, _ = _read(out)
  assert np.abs(got.astype(int) - _image_path(one_step_workdir, frames)).max() <= 1
  with pytest.raises(ValueError, match=r'^--tile=40: this generator needs tiles of at least 80'):
    video.translate_video(one_step_workdir, path, out, tile=40)
