"""UNSB through every mode on a tiny trained run: translate with --nfe and
--seed, the results page, evaluate at every NFE, video, ONNX, tiles."""

import os

import numpy as np
import pytest

from configs import tiny_unsb
from cyclegan_jax import generation
from cyclegan_jax import sb_models
from tests import synthetic

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def unsb_run(tmp_path_factory):
  """A tiny UNSB run of 2 steps -> (workdir, data folder)."""
  from cyclegan_jax import train  # pylint: disable=import-outside-toplevel
  tmp_path = tmp_path_factory.mktemp('unsb')
  root = synthetic.make_unpaired_folder(str(tmp_path / 'data'), n_train=4, n_test=2)
  config = tiny_unsb.get_config()
  config.data.image_dir = root
  config.train.num_steps = 2
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  return workdir, root


def test_a_tiny_run_translates_with_nfe_and_seed_and_writes_every_nfe_on_its_page(
    unsb_run, tmp_path):
  from cyclegan_jax import results_page  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import translate  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  workdir, root = unsb_run

  def translated(name, **kwargs):
    translate.translate_folder(workdir, f'{root}/testA', str(tmp_path / name), **kwargs)
    return np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / name).iterdir())])

  first = translated('out')
  assert first.shape == (2, 32, 32, 3)
  np.testing.assert_array_equal(translated('again'), first)  # The same command, the same images.
  np.testing.assert_array_equal(translated('all_steps', nfe=3, seed=0), first)
  np.testing.assert_array_equal(translated('nfe2', nfe=2), translated('nfe2_again', nfe=2))
  assert np.abs(translated('nfe1', nfe=1).astype(int) - first).max() > 0
  assert np.abs(translated('seed1', seed=1).astype(int) - first).max() > 0
  page = open(results_page.write_results_page(workdir, num_test=2)).read()
  assert all(f'A→B, NFE {n}' in page for n in (1, 2, 3)) and 'NFE 4' not in page
  page = open(results_page.write_results_page(workdir, num_test=2, nfe=2, seed=1)).read()
  assert 'A→B, NFE 2' in page and 'NFE 3' not in page and '(seed 1)' in page


def test_evaluate_scores_every_nfe_and_names_the_best(unsb_run, tmp_path):
  from cyclegan_jax import evaluate  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import inception  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import inception_weights  # pylint: disable=import-outside-toplevel
  workdir, _ = unsb_run
  weights = str(tmp_path / 'random_fid_inception.npz')
  inception_weights.save(weights, inception.init_variables(seed=0))
  result = evaluate.evaluate_workdir(workdir, inception_weights=weights)
  scores = result['AtoB']
  assert sorted(scores['by_nfe']) == ['1', '2', '3'] and scores['nfe'] == 3
  fids = {int(n): s['fid'] for n, s in scores['by_nfe'].items()}
  assert scores['best_nfe'] == min(fids, key=fids.get)
  assert scores['fid'] == fids[3]
  assert len(set(fids.values())) == 3  # Each NFE's own translations.
  scalars = evaluate.scalars(result)
  assert {'eval/AtoB/nfe_1/fid', 'eval/AtoB/nfe_3/kid_std', 'eval/AtoB/best_nfe'} <= set(scalars)
  one = evaluate.evaluate_workdir(workdir, inception_weights=weights, nfe=2)['AtoB']
  assert one['nfe'] == 2 and 'by_nfe' not in one
  np.testing.assert_allclose(one['fid'], fids[2], rtol=1e-5)
  # The report lists FID by NFE (of the latest evaluation with every NFE).
  evaluate.evaluate_workdir(workdir, inception_weights=weights)
  from cyclegan_jax import report  # pylint: disable=import-outside-toplevel
  report.write_report([workdir], str(tmp_path / 'report'))
  text = (tmp_path / 'report' / 'report.md').read_text()
  assert '| run | direction | step | NFE 1 | NFE 2 | NFE 3 | best NFE |' in text
  assert f'| {fids[1]:.4g} | {fids[2]:.4g} | {fids[3]:.4g} | {scores["best_nfe"]} |' in text
  assert 'NFE 3</th>' in (tmp_path / 'report' / 'index.html').read_text()


def test_video_frames_see_the_same_noise(unsb_run, tmp_path):
  """A batch of frames is translated as each frame alone (the image path)."""
  iio = pytest.importorskip('imageio.v2')  # The "export" extra, which .ci/run installs.
  from cyclegan_jax import inference  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import video  # pylint: disable=import-outside-toplevel
  workdir, _ = unsb_run
  rng = np.random.default_rng(0)
  frames = np.stack([synthetic.random_scene(rng, 32)[:22, :30] for _ in range(3)] * 2)
  path = str(tmp_path / 'clip.mkv')
  with iio.get_writer(path, format='FFMPEG', fps=10, codec='ffv1', pixelformat='bgr0',
                      macro_block_size=1, ffmpeg_log_level='error') as writer:
    for frame in frames:
      writer.append_data(frame)
  out = str(tmp_path / 'out.mkv')
  assert video.translate_video(workdir, path, out, batch_size=4, nfe=2) == 6
  with iio.get_reader(out, format='FFMPEG') as reader:
    got = np.stack(list(reader.iter_data()))
  generator = inference.restore(workdir, nfe=2).generator
  expected = np.stack([generation.translate_image(generator.module, generator.params, f)
                       for f in frames])
  # Within one grey level: batches of 4 round convolutions differently.
  assert np.abs(got.astype(int) - expected).max() <= 1
  assert np.abs(got[:3].astype(int) - got[3:]).max() <= 1  # The same frame, the same output.


def test_main_refuses_nfe_outside_translation_modes(unsb_run):
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  workdir, root = unsb_run
  result = subprocess.run([sys.executable, 'main.py', '--mode=translate', f'--workdir={workdir}',
                           f'--input={root}/testA', f'--output={workdir}/x', '--nfe=9'],
                          capture_output=True, text=True, timeout=300, cwd=_REPO)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      "error: --nfe=9: expected 1 to 3 (the model's model.unsb_num_timesteps=3 steps)")
  result = subprocess.run([sys.executable, 'main.py', '--mode=extract', f'--workdir={workdir}',
                           '--seed=1'], capture_output=True, text=True, timeout=300, cwd=_REPO)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      'error: --seed is for --mode=translate, test or evaluate (a translation\'s steps and '
      'noise); the training seed is --config.seed')


def test_onnx_exports_one_step_and_the_docs_script_translates_as_translate(unsb_run, tmp_path):
  """--mode=export writes G(image, t, z) as one ONNX step with the time grid
  and tau in its JSON; docs/scripts/unsb_onnx.py runs the NFE loop in ONNX
  Runtime and, given the noise JAX draws, gives --mode=translate's images."""
  ort = pytest.importorskip('onnxruntime')
  import importlib.util  # pylint: disable=import-outside-toplevel
  import json  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import export  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import inference  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import translate  # pylint: disable=import-outside-toplevel
  workdir, root = unsb_run
  with pytest.raises(ValueError, match=r'^--export_tiles: this model translates in steps'):
    export.export_workdir(workdir, str(tmp_path / 'tiles'), tiles=True)
  written = export.export_workdir(workdir, str(tmp_path / 'onnx'))
  assert written == [str(tmp_path / 'onnx' / 'AtoB.onnx')]
  spec = json.loads((tmp_path / 'onnx' / 'AtoB.json').read_text())
  assert spec['steps']['num_timesteps'] == spec['steps']['nfe'] == 3
  assert spec['steps']['times'] == pytest.approx(list(sb_models.time_grid(3)))
  session = ort.InferenceSession(written[0], providers=['CPUExecutionProvider'])
  restored = inference.restore(workdir)
  generator, params = restored.generator.module, restored.generator.params
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (2, 12, 20, 3)).astype(np.float32)
  t, z = np.array([0, 2], np.int32), rng.standard_normal((2, 32)).astype(np.float32)
  np.testing.assert_allclose(
      session.run(None, {'image': x, 't': t, 'z': z})[0],
      generator.apply({'params': params}, x, t, z), atol=1e-4)

  spec_path = os.path.join(_REPO, 'docs', 'scripts', 'unsb_onnx.py')
  module_spec = importlib.util.spec_from_file_location('unsb_onnx', spec_path)
  script = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(script)
  translate.translate_folder(workdir, f'{root}/testA', str(tmp_path / 'jax'), nfe=2, seed=3)
  for name in sorted(os.listdir(f'{root}/testA')):
    image = np.asarray(Image.open(f'{root}/testA/{name}').convert('RGB'))
    x = image[None].astype(np.float32) / 127.5 - 1
    draws = [tuple(np.asarray(d) for d in pair)
             for pair in sb_models.translation_draws(3, 2, x.shape[1:], 32)]
    out = script.translate(session, spec, x, nfe=2, draws=draws)[0]
    ours = np.asarray(Image.open(tmp_path / 'jax' / (os.path.splitext(name)[0] + '.png')))
    assert np.abs(np.round((np.clip(out, -1, 1) + 1) * 127.5) - ours).max() <= 1
  # Its command line, with numpy's noise: an image of the input's size.
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  first = sorted(os.listdir(f'{root}/testA'))[0]
  result = subprocess.run([sys.executable, spec_path, written[0], f'{root}/testA/{first}',
                           str(tmp_path / 'ort.png'), '--nfe=3', '--seed=1'],
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert np.asarray(Image.open(tmp_path / 'ort.png')).shape == (32, 32, 3)


@pytest.mark.parametrize('stats_mode', ['exact', 'thumbnail'])
def test_tiles_give_the_untiled_translation_at_every_nfe(unsb_run, tmp_path, stats_mode):
  """Tiled translation of a UNSB model, step by step: x_t whole at the padded
  size, each step's G in tiles with the whole image's statistics, the
  untiled noise. 'exact': within 1 grey level of the untiled translation at
  NFE 1 and 3 (a 150 x 118 image in 112-pixel tiles: 20 tiles, 4 x 5, and
  the padding to a multiple of 4); --mode=translate --tile gives the same."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import inference  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import tiling  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import translate  # pylint: disable=import-outside-toplevel
  workdir, _ = unsb_run
  image = synthetic.random_scene(np.random.default_rng(5), 160)[:118, :150]
  for nfe in (1, 3):
    restored = inference.restore(workdir, nfe=nfe, seed=2).generator
    module, params = restored.module, restored.params
    whole = generation.translate_image(module, params, image).astype(int)
    tiled = tiling.translate_image_tiled(module, params, image, 112, stats_mode=stats_mode)
    assert len(tiling.plan(tiling.one_program(module, params)[0], 118, 150, 112)) == 20
    error = np.abs(tiled.astype(int) - whole).max()
    if stats_mode == 'exact':
      assert error <= 1, (nfe, error)
    else:  # Approximate statistics: close, not equal.
      assert np.abs(tiled.astype(int) - whole).mean() < 3, (nfe, error)
  if stats_mode == 'exact':
    folder = tmp_path / 'in'
    folder.mkdir()
    Image.fromarray(image).save(folder / 'scene.png')
    translate.translate_folder(workdir, str(folder), str(tmp_path / 'out'), tile=112, nfe=3,
                               seed=2)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / 'out' / 'scene.png')), tiled)
