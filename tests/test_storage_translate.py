"""--mode=translate with the input, the output and the workdir on Cloud
Storage (a local emulator, tests/gcs.py): folders of images (8 and 16 bits,
PNG and TIFF, whole and in tiles) and videos, each against the same
translation of local copies (the same files, byte for byte), and the
refusals, one line naming the gs:// path as the local ones do."""

import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from cyclegan_jax import image_io
from cyclegan_jax import storage
from cyclegan_jax import tiled_io
from cyclegan_jax import translate
from cyclegan_jax.data import input_pipeline
from tests import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytest.importorskip('gcsfs', reason='the gcs extra')
pytest.importorskip('google.cloud.storage', reason='the gcs extra')


def _remote_names(folder) -> list[str]:
  """Every object under a remote folder, relative to it."""
  root = storage.absolute(folder) + '/'
  return [path[len(root):] for path in storage.files_under(folder)]


def _local_names(folder) -> list[str]:
  return sorted(os.path.relpath(path, folder) for path in storage.files_under(str(folder)))


def _same_outputs(local_dir, remote_dir, local_written, remote_written) -> list[str]:
  """The same files in both folders, byte for byte; returns their names."""
  names = _local_names(local_dir)
  assert _remote_names(remote_dir) == names  # No probe or partial object left.
  assert [os.path.basename(p) for p in remote_written] == [
      os.path.basename(p) for p in local_written]
  assert remote_written == [f'{remote_dir}/{os.path.basename(p)}' for p in local_written]
  for name in names:
    assert storage.read_bytes(f'{remote_dir}/{name}') == (local_dir / name).read_bytes(), name
  return names


def _upload(local_dir, remote_dir) -> None:
  storage.copytree(str(local_dir), remote_dir)


@pytest.fixture(scope='module')
def images(tmp_path_factory):
  """A local folder of small inputs: 8-bit PNG and JPEG of odd sizes, a
  16-bit PNG, a hidden file, a text file and a sub-folder named like an
  image (neither of the last three is an input)."""
  folder = tmp_path_factory.mktemp('images')
  rng = np.random.default_rng(0)
  Image.fromarray(synthetic.random_scene(rng, 32)).save(folder / 'a.png')
  Image.fromarray(synthetic.random_scene(rng, 48)[:40, :36]).save(folder / 'b.jpg')
  image_io.write(str(folder / 'c16.png'),
                 rng.integers(0, 65536, (24, 32, 3), dtype=np.uint16))
  (folder / '.hidden.png').write_bytes((folder / 'a.png').read_bytes())
  (folder / 'notes.txt').write_text('not an image')
  (folder / 'sub.png').mkdir()
  (folder / 'sub.png' / 'd.png').write_bytes((folder / 'a.png').read_bytes())
  return folder


def test_list_images_of_a_remote_folder(images, bucket):
  _upload(images, f'{bucket}/in')
  expected = [f'{bucket}/in/{name}' for name in ('a.png', 'b.jpg', 'c16.png')]
  assert input_pipeline.list_images(f'{bucket}/in') == expected
  assert input_pipeline.list_images(f'{bucket}/in/') == expected
  assert [os.path.basename(p) for p in input_pipeline.list_images(str(images))] == [
      'a.png', 'b.jpg', 'c16.png']
  for path in expected:  # Read from the bucket: the same pixels as the local file.
    np.testing.assert_array_equal(image_io.read(path),
                                  image_io.read(str(images / os.path.basename(path))))


def test_a_folder_gs_to_gs_with_a_gs_workdir_equals_the_local_translation(
    one_step_workdir, images, bucket, tmp_path):
  storage.copytree(one_step_workdir, f'{bucket}/w')
  _upload(images, f'{bucket}/in')
  before = {name: storage.read_bytes(f'{bucket}/in/{name}') for name in _remote_names(
      f'{bucket}/in')}
  local = translate.translate_folder(one_step_workdir, str(images), str(tmp_path / 'out'))
  remote = translate.translate_folder(f'{bucket}/w', f'{bucket}/in', f'{bucket}/out')
  assert _same_outputs(tmp_path / 'out', f'{bucket}/out', local, remote) == [
      'a.png', 'b.png', 'c16.png']
  assert image_io.read(f'{bucket}/out/c16.png').dtype == np.uint16  # 16 bits in, 16 out.
  assert {name: storage.read_bytes(f'{bucket}/in/{name}') for name in _remote_names(
      f'{bucket}/in')} == before  # The inputs untouched.
  # From the bucket to a local folder, and back, in BtoA: the same again.
  local = translate.translate_folder(one_step_workdir, str(images), str(tmp_path / 'ba'), 'BtoA')
  down = translate.translate_folder(one_step_workdir, f'{bucket}/in', str(tmp_path / 'down'),
                                    'BtoA')
  assert _local_names(tmp_path / 'down') == _local_names(tmp_path / 'ba')
  assert down == [str(tmp_path / 'down' / os.path.basename(p)) for p in local]
  for name in _local_names(tmp_path / 'ba'):
    assert (tmp_path / 'down' / name).read_bytes() == (tmp_path / 'ba' / name).read_bytes()
  up = translate.translate_folder(one_step_workdir, str(images), f'{bucket}/up/', 'BtoA')
  _same_outputs(tmp_path / 'ba', f'{bucket}/up', local, up)


def _tiff16(path, rng, shape, **options):
  import tifffile  # pylint: disable=import-outside-toplevel
  pixels = rng.integers(0, 65536, shape, dtype=np.uint16)
  tifffile.imwrite(path, pixels, photometric='rgb' if len(shape) == 3 else 'minisblack',
                   **options)
  return pixels


def test_sixteen_bit_tiffs_and_tiles_from_gs_equal_local(one_step_workdir, bucket, tmp_path):
  """16-bit TIFFs in (RGB and gray, one block each), 16-bit TIFFs out; then
  --tile (80: the smallest this generator takes) on a tiled TIFF that needs
  several tiles (streamed a window at a time from a local copy), written as a
  tiled TIFF (tile by tile, then uploaded) and as a 16-bit PNG."""
  import tifffile  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(1)
  inputs, large = tmp_path / 'in', tmp_path / 'large'
  inputs.mkdir()
  large.mkdir()
  _tiff16(inputs / 'rgb.tif', rng, (32, 32, 3))
  _tiff16(inputs / 'gray.tiff', rng, (32, 32))
  _tiff16(large / 'tiled.tif', rng, (96, 112, 3), tile=(16, 16))
  _upload(inputs, f'{bucket}/in')
  _upload(large, f'{bucket}/large')
  local = translate.translate_folder(one_step_workdir, str(inputs), str(tmp_path / 'out'))
  remote = translate.translate_folder(one_step_workdir, f'{bucket}/in', f'{bucket}/out')
  assert _same_outputs(tmp_path / 'out', f'{bucket}/out', local, remote) == [
      'gray.tif', 'rgb.tif']
  assert image_io.read(f'{bucket}/out/rgb.tif').dtype == np.uint16
  windows = tiled_io.open_image(f'{bucket}/large/tiled.tif')
  try:
    assert windows.streamed and (windows.height, windows.width) == (96, 112)
    np.testing.assert_array_equal(windows.read(10, 30, 20, 50),
                                  tifffile.imread(large / 'tiled.tif')[10:30, 20:50])
  finally:
    windows.close()
  for output_format in ('tiff', 'png'):
    local = translate.translate_folder(one_step_workdir, str(large),
                                       str(tmp_path / f'tiles_{output_format}'),
                                       output_format=output_format, tile=80)
    remote = translate.translate_folder(one_step_workdir, f'{bucket}/large',
                                        f'{bucket}/tiles_{output_format}',
                                        output_format=output_format, tile=80)
    _same_outputs(tmp_path / f'tiles_{output_format}', f'{bucket}/tiles_{output_format}',
                  local, remote)
  with tifffile.TiffFile(tmp_path / 'tiles_tiff' / 'tiled.tif') as tiff:
    assert tiff.pages[0].is_tiled  # Written tile by tile.
  assert image_io.read(f'{bucket}/tiles_png/tiled.png').dtype == np.uint16


def test_refusals_name_the_gs_path_in_one_line(one_step_workdir, images, bucket, tmp_path,
                                              monkeypatch):
  monkeypatch.setattr(translate.inference.checkpoints, 'load_params',
                      lambda *args: pytest.fail('load_params called'))  # Refused before.
  out = f'{bucket}/out'

  def refused(error, pattern, input_dir, output_dir=out):
    with pytest.raises(error, match=pattern) as raised:
      translate.translate_folder(one_step_workdir, input_dir, output_dir)
    assert '\n' not in str(raised.value)

  refused(FileNotFoundError, f'^{bucket}/nowhere: no such folder; expected a folder of images '
          r'\(\.png/', f'{bucket}/nowhere')
  refused(FileNotFoundError, '^gs://no-such-bucket-for-cyclegan-jax/in: no such folder',
          'gs://no-such-bucket-for-cyclegan-jax/in')
  storage.write_text_atomically(f'{bucket}/notes/a.txt', 'not an image')
  refused(FileNotFoundError, f'^{bucket}/notes: no images found; expected files ending in',
          f'{bucket}/notes')
  refused(FileNotFoundError, f'^{bucket}/notes/a.txt: not a folder', f'{bucket}/notes/a.txt')
  _upload(images, f'{bucket}/in')
  for output in (f'{bucket}/in', f'{bucket}/in/', f'{bucket}//in', f'{bucket}/./in/'):
    refused(ValueError, f'^--output={output} is the input folder {bucket}/in; choose another',
            f'{bucket}/in', output)
  refused(FileExistsError, f'^--output={bucket}/in/a.png is a file; expected a folder',
          f'{bucket}/in', f'{bucket}/in/a.png')
  refused(OSError, '^--output=gs://no-such-bucket-for-cyclegan-jax/out: cannot create this '
          r'folder or write in it \(no such bucket: gs://no-such-bucket-for-cyclegan-jax\)$',
          f'{bucket}/in', 'gs://no-such-bucket-for-cyclegan-jax/out')
  assert not _remote_names(out)  # Nothing written, not even a probe.
  monkeypatch.undo()
  storage.write_bytes_atomically(f'{bucket}/bad/b.jpg', b'not a jpeg')
  refused(image_io.BadImageError, f'^{bucket}/bad/b.jpg: cannot read this image', f'{bucket}/bad')
  assert not _remote_names(out)


iio_reason = 'video translation needs the "export" extra (imageio, imageio-ffmpeg)'


@pytest.fixture(scope='module')
def clip(tmp_path_factory):
  """Five 30x22 frames as a lossless FFV1 .mkv (as in test_video.py)."""
  iio = pytest.importorskip('imageio.v2', reason=iio_reason)
  pytest.importorskip('imageio_ffmpeg', reason=iio_reason)
  rng = np.random.default_rng(0)
  frames = np.stack([synthetic.random_scene(rng, 32)[:22, :30] for _ in range(5)])
  path = str(tmp_path_factory.mktemp('video') / 'clip.mkv')
  with iio.get_writer(path, format='FFMPEG', fps=12.5, codec='ffv1', pixelformat='bgr0',
                      macro_block_size=1, ffmpeg_log_level='error') as writer:
    for frame in frames:
      writer.append_data(frame)
  return path


def _frames(path):
  import imageio.v2 as iio  # pylint: disable=import-outside-toplevel
  with storage.local_file(path) as local, iio.get_reader(local, format='FFMPEG') as reader:
    return np.stack(list(reader.iter_data())), reader.get_meta_data()['fps']


def test_a_video_gs_to_gs_equals_the_local_translation(one_step_workdir, clip, bucket, tmp_path):
  from cyclegan_jax import video  # pylint: disable=import-outside-toplevel
  storage.copy(clip, f'{bucket}/clip.mkv')
  storage.write_bytes_atomically(f'{bucket}/v.mkv/x', b'')  # A folder named like a video.
  local = str(tmp_path / 'out.mkv')
  assert video.translate_video(one_step_workdir, clip, local, batch_size=2) == 5
  assert video.translate_video(one_step_workdir, f'{bucket}/clip.mkv', f'{bucket}/v/out.mkv',
                               batch_size=2, tile=80) == 5
  (expected, fps), (got, remote_fps) = _frames(local), _frames(f'{bucket}/v/out.mkv')
  assert remote_fps == fps == 12.5 and got.shape == (5, 22, 30, 3)
  # Tiled (one 80-pixel tile, whole-frame statistics): within a grey level.
  assert np.abs(got.astype(int) - expected).max() <= 1
  assert _remote_names(f'{bucket}/v') == ['out.mkv']  # No partial or probe object.
  # Mixed: from the bucket to a local file, and up to an .mp4 in the bucket.
  assert video.translate_video(one_step_workdir, f'{bucket}/clip.mkv',
                               str(tmp_path / 'down.mkv')) == 5
  np.testing.assert_array_equal(_frames(str(tmp_path / 'down.mkv'))[0], expected)
  assert video.translate_video(one_step_workdir, clip, f'{bucket}/v/out.mp4') == 5
  assert _frames(f'{bucket}/v/out.mp4')[0].shape == (5, 22, 30, 3)
  # Refusals, one line naming the gs:// path.
  for output, error, pattern in (
      (f'{bucket}/clip.mkv', ValueError, f'^--output={bucket}/clip.mkv is the input video'),
      (f'{bucket}/v.mkv', IsADirectoryError, f'^--output={bucket}/v.mkv is a folder'),
      ('gs://no-such-bucket-for-cyclegan-jax/o.mkv', OSError,
       '^--output=gs://no-such-bucket-for-cyclegan-jax/o.mkv: cannot write in '
       r'gs://no-such-bucket-for-cyclegan-jax \(no such bucket: '
       r'gs://no-such-bucket-for-cyclegan-jax\)$')):
    with pytest.raises(error, match=pattern) as raised:
      video.translate_video(one_step_workdir, f'{bucket}/clip.mkv', output)
    assert '\n' not in str(raised.value)
  with pytest.raises(FileNotFoundError, match=f'^--input={bucket}/none.mkv: no such file$'):
    video.translate_video(one_step_workdir, f'{bucket}/none.mkv', f'{bucket}/o.mkv')
  storage.write_bytes_atomically(f'{bucket}/broken.mp4', b'not a video at all' * 100)
  with pytest.raises(ValueError, match=f'^--input={bucket}/broken.mp4: cannot decode this '
                                       'video') as raised:
    video.translate_video(one_step_workdir, f'{bucket}/broken.mp4', f'{bucket}/o.mkv')
  assert 'cyclegan_jax_' not in str(raised.value)  # Names the object, not its local copy.
  assert sorted(_remote_names(bucket)) == ['broken.mp4', 'clip.mkv', 'v.mkv/x', 'v/out.mkv',
                                          'v/out.mp4']


@pytest.mark.slow
def test_main_translates_gs_to_gs(one_step_workdir, images, bucket, tmp_path):
  """main.py end to end, workdir, input and output in the bucket: the local
  translation's files; a missing input folder is one line, exit status 1."""
  storage.copytree(one_step_workdir, f'{bucket}/w')
  _upload(images, f'{bucket}/in')
  local = translate.translate_folder(one_step_workdir, str(images), str(tmp_path / 'out'),
                                     tile=80)

  def run(input_dir):
    return subprocess.run([sys.executable, 'main.py', '--mode=translate',
                           f'--workdir={bucket}/w', f'--input={input_dir}',
                           f'--output={bucket}/out', '--tile=80'],
                          cwd=REPO, capture_output=True, text=True, timeout=300)

  result = run(f'{bucket}/in')
  assert result.returncode == 0, result.stderr[-3000:]
  _same_outputs(tmp_path / 'out', f'{bucket}/out', local,
                [f'{bucket}/out/{os.path.basename(p)}' for p in local])
  result = run(f'{bucket}/nowhere')
  assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  assert result.stderr.strip().splitlines()[-1].startswith(
      f'error: {bucket}/nowhere: no such folder; expected a folder of images')
