"""ONNX export: ONNX Runtime on the exported file computes what the JAX generator
computes, and every bad input is refused in one line."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from configs import tiny
from configs import tiny_pix2pix
from cyclegan_jax import generation
from cyclegan_jax import configuration
from cyclegan_jax import families
from cyclegan_jax import checkpoints
from cyclegan_jax import export
from cyclegan_jax import models
from cyclegan_jax import tiling

ort = pytest.importorskip('onnxruntime')  # The "export" extra, which .ci/run installs.

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _session(path):
  return ort.InferenceSession(path, providers=['CPUExecutionProvider'])


def _run(session, images):
  return session.run(None, {export.INPUT_NAME: images})[0]


def _images(shape, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


@pytest.mark.parametrize('config_module, network', [(tiny, 'gen_ab'), (tiny_pix2pix, 'gen')],
                         ids=['resnet_instance_norm', 'unet_batch_norm'])
def test_onnx_runtime_gives_the_jax_generator_output_at_two_sizes(config_module, network,
                                                                  tmp_path):
  model_config = config_module.get_config().model
  generator = export.exportable_generator(model_config, network)  # unet_32: no dropout.
  m = models.generator_multiple(generator)
  params = generator.init(jax.random.PRNGKey(1), jnp.zeros((1, m, m, 3)), train=False)['params']
  path = str(tmp_path / 'g.onnx')
  info = export.export_generator(generator, params, path, channels=3)
  assert info['input']['size_multiple'] == m == (4 if network == 'gen_ab' else 32)
  session = _session(path)
  assert [d for d in session.get_inputs()[0].shape] == ['batch', 'height', 'width', 3]
  # Batch 1 square and batch 2 non-square: the batch, height and width are dynamic
  # (batch norm: the two images share the batch's statistics, in both).
  for shape in ((1, 2 * m, 2 * m, 3), (2, 3 * m, 4 * m, 3)):
    x = _images(shape)
    expected = np.asarray(generation.generate(generator, params, x))
    got = _run(session, x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    assert np.abs(expected).mean() > 0.01  # Not a trivially zero output.


@pytest.mark.parametrize('config_module, network', [(tiny, 'gen_ab'), (tiny_pix2pix, 'gen')],
                         ids=['resnet_instance_norm', 'unet_batch_norm'])
def test_the_tile_and_statistics_programs_compute_what_jax_does(config_module, network,
                                                                tmp_path):
  """--export_tiles' two files against tiling.window_with_statistics and
  tiling.own_statistics on the same inputs: a non-square window, a core
  inside it, statistics that are not the window's own."""
  generator = export.exportable_generator(config_module.get_config().model, network)
  m = models.generator_multiple(generator)
  params = generator.init(jax.random.PRNGKey(1), jnp.zeros((1, m, m, 3)), train=False)['params']
  tiles = export.export_tile_programs(generator, params, str(tmp_path / 'g'), channels=3)
  assert sorted(os.listdir(tmp_path)) == ['g.statistics.onnx', 'g.tile.onnx']
  layers = tiling.norm_layers(generator, params, 3)
  assert [(layer['channels'], layer['downsampling']) for layer in tiles['norm_layers']] == layers
  assert (tiles['halo'], tiles['min_tile']) == (tiling.halo(generator), tiling.min_tile(generator))
  total = sum(c for c, _ in layers)
  rng = np.random.default_rng(4)
  x = _images((1, 3 * m, 2 * m, 3))
  mean = rng.normal(0, 0.3, total).astype(np.float32)
  var = rng.uniform(0.5, 2.0, total).astype(np.float32)
  core = np.array([m, 3 * m, 0, m], np.int32)
  session = _session(str(tmp_path / 'g.tile.onnx'))
  assert [i.name for i in session.get_inputs()] == ['image', *export.TILE_INPUTS]
  assert [o.name for o in session.get_outputs()] == ['translated', *export.TILE_OUTPUTS]
  got = session.run(None, {'image': x, 'mean': mean, 'var': var, 'core': core})
  expected = jax.jit(lambda *a: tiling.window_with_statistics(generator, params, layers, *a))(
      x, mean, var, core)
  assert got[0].shape == (1, 3 * m, 2 * m, 3) and np.abs(expected[0]).mean() > 0.01
  np.testing.assert_array_equal(got[1], [2 * m * m / f**2 for _, f in layers])
  for a, b in zip(got, expected):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  session = _session(str(tmp_path / 'g.statistics.onnx'))
  got = session.run(None, {'image': x})
  expected = jax.jit(lambda x: tiling.own_statistics(generator, params, x))(x)
  assert [o.name for o in session.get_outputs()] == list(export.STATISTICS_OUTPUTS)
  for a, b in zip(got, expected):
    assert a.shape == (total,)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_test_time_dropout_is_refused_unless_turned_off(tmp_path):
  model_config = tiny_pix2pix.get_config().model
  model_config.generator = 'unet_64'  # The smallest U-Net with dropout layers.
  assert model_config.dropout and model_config.dropout_at_test
  generator = export.exportable_generator(model_config, 'gen')
  with pytest.raises(ValueError, match='dropout at test time .* --dropout_at_test=false'):
    export.export_generator(generator, {}, str(tmp_path / 'g.onnx'), channels=3)
  assert not os.listdir(tmp_path)
  generator = export.exportable_generator(model_config, 'gen', dropout_at_test=False)
  assert not generator.dropout_at_test and models.has_dropout_layers(generator)


def test_a_workdir_exports_both_generators_with_their_json(one_step_workdir, tmp_path):
  output = tmp_path / 'onnx'
  written = export.export_workdir(one_step_workdir, str(output))
  assert written == [str(output / 'AtoB.onnx'), str(output / 'BtoA.onnx')]
  assert sorted(os.listdir(output)) == ['AtoB.json', 'AtoB.onnx', 'BtoA.json', 'BtoA.onnx']
  info = json.loads((output / 'BtoA.json').read_text())
  assert info['network'] == 'gen_ba' and info['step'] == 1
  assert info['input'] == {'name': 'image', 'channels': 3, 'layout': 'NHWC', 'dtype': 'float32',
                           'value_range': [-1.0, 1.0], 'size_multiple': 4, 'min_size': 8}
  assert info['config']['model']['generator'] == 'resnet_2blocks'
  # The BtoA file is gen_ba of the checkpoint, not gen_ab.
  _, params = checkpoints.load_params(one_step_workdir, ('gen_ba',))
  generator = families.for_model(configuration.load(one_step_workdir).model).create_generators(configuration.load(one_step_workdir).model)['gen_ba']
  x = _images((1, 12, 20, 3))
  np.testing.assert_allclose(_run(_session(str(output / 'BtoA.onnx')), x),
                             generation.generate(generator, params['gen_ba'], x), atol=1e-4)
  # One direction: only its files, beside the others, which stay.
  (output / 'AtoB.onnx').unlink()
  assert export.export_workdir(one_step_workdir, str(output), 'AtoB') == [
      str(output / 'AtoB.onnx')]


def test_bad_requests_are_refused_by_name(one_step_workdir, tmp_path):
  with pytest.raises(ValueError, match=r"^--direction='sideways': expected AtoB, BtoA or both"):
    export.export_workdir(one_step_workdir, str(tmp_path / 'out'), 'sideways')
  (tmp_path / 'file').write_text('keep me')
  with pytest.raises(FileExistsError, match=f'^--output={tmp_path / "file"} is a file'):
    export.export_workdir(one_step_workdir, str(tmp_path / 'file'))
  assert (tmp_path / 'file').read_text() == 'keep me'
  empty = tmp_path / 'no_checkpoints'
  empty.mkdir()
  checkpoints.save_config(tiny.get_config(), str(empty))
  with pytest.raises(FileNotFoundError, match=f'^{empty}/checkpoints: no checkpoint'):
    export.export_workdir(str(empty), str(tmp_path / 'out'))
  with pytest.raises(FileNotFoundError, match='config.json: not found'):
    export.export_workdir(str(tmp_path / 'nowhere'), str(tmp_path / 'out'))
  assert not os.listdir(tmp_path / 'out')


def test_a_missing_extra_is_named(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, 'jax2onnx', None)  # As if not installed.
  with pytest.raises(ImportError, match=r'optional extra "export" \(jax2onnx is missing\): '
                                        r'pip install -e "\.\[export\]"'):
    export.export_workdir(str(tmp_path), str(tmp_path / 'out'))


def _readme_example() -> str:
  with open(os.path.join(REPO, 'README.md')) as f:
    readme = f.read()
  block = readme.split('<!-- onnx-example -->\n```python\n', 1)[1]
  return block.split('```', 1)[0]


@pytest.mark.slow
def test_main_exports_and_the_readme_example_runs_it(one_step_workdir, tmp_path):
  """main.py --mode=export, then README's ONNX Runtime example on its file,
  with nothing of JAX (or TensorFlow) imported, against translate_image."""
  output = tmp_path / 'onnx'
  done = subprocess.run([sys.executable, 'main.py', '--mode=export',
                         f'--workdir={one_step_workdir}', f'--output={output}', '--direction=AtoB'],
                        cwd=REPO, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr
  assert f'Wrote {output / "AtoB.onnx"}' in done.stdout
  photo = np.random.default_rng(3).integers(0, 256, (42, 37, 3), dtype=np.uint8)
  Image.fromarray(photo).save(tmp_path / 'horse.jpg', quality=95)
  check = ("\nimport sys\nloaded = {m.split('.')[0] for m in sys.modules}\n"
           "assert not loaded & {'jax', 'flax', 'tensorflow', 'cyclegan_jax'}, loaded\n")
  done = subprocess.run([sys.executable, '-c', _readme_example() + check], cwd=tmp_path,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  resized = Image.open(tmp_path / 'horse.jpg').convert('RGB').resize((36, 40), Image.BICUBIC)
  _, params = checkpoints.load_params(one_step_workdir, ('gen_ab',))
  generator = families.for_model(configuration.load(one_step_workdir).model).create_generators(configuration.load(one_step_workdir).model)['gen_ab']
  expected = generation.translate_image(generator, params['gen_ab'], np.asarray(resized))
  got = np.asarray(Image.open(tmp_path / 'zebra.png'))
  assert got.shape == (40, 36, 3)
  assert np.abs(got.astype(int) - expected).max() <= 1  # float rounding, then to 8 bits.



def _docs_block(page: str, marker: str) -> str:
  with open(os.path.join(REPO, 'docs', page)) as f:
    text = f.read()
  return text.split(f'<!-- {marker} -->\n```python\n', 1)[1].split('```', 1)[0]


@pytest.mark.slow
def test_the_docs_tile_script_runs_the_exported_tiles_as_the_untiled_translation(
    one_step_workdir, tmp_path):
  """main.py --mode=export --export_tiles, then docs/export.md's script as it
  is written (tile 512, one pass per layer), with nothing of JAX imported, on
  an odd-sized image of 2 x 2 tiles: the untiled translation within 1 grey
  level; with no passes (thumbnail statistics) not."""
  output = tmp_path / 'onnx'
  done = subprocess.run([sys.executable, 'main.py', '--mode=export', '--export_tiles',
                         f'--workdir={one_step_workdir}', f'--output={output}', '--direction=AtoB'],
                        cwd=REPO, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr
  for name in ('AtoB.onnx', 'AtoB.tile.onnx', 'AtoB.statistics.onnx'):
    assert f'Wrote {output / name}' in done.stdout
  info = json.loads((output / 'AtoB.json').read_text())
  assert info['tiles']['file'] == 'AtoB.tile.onnx' and info['tiles']['min_tile'] <= 512
  rows = np.linspace(0, 255, 601)[:, None, None]
  photo = np.uint8(np.clip(rows * np.array([1.0, 0.6, 0.2]) + np.random.default_rng(5).normal(
      0, 20, (601, 703, 3)), 0, 255))
  Image.fromarray(photo).save(tmp_path / 'big.png')
  script = _docs_block('export.md', 'onnx-tiles-example')
  check = ("\nimport sys\nloaded = {m.split('.')[0] for m in sys.modules}\n"
           "assert not loaded & {'jax', 'flax', 'tensorflow', 'cyclegan_jax'}, loaded\n"
           "assert len(tiles) == 4, tiles\n")
  done = subprocess.run([sys.executable, '-c', script + check], cwd=tmp_path,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  config = configuration.load(one_step_workdir)
  generator = families.for_model(config.model).create_generators(config.model)['gen_ab']
  _, params = checkpoints.load_params(one_step_workdir, ('gen_ab',))
  expected = generation.translate_image(generator, params['gen_ab'], photo).astype(int)
  got = np.asarray(Image.open(tmp_path / 'big_translated.png')).astype(int)
  assert got.shape == expected.shape == (601, 703, 3)
  assert np.abs(got - expected).max() <= 1
  assert expected.std() > 5  # A translation with contrast.
  zero_passes = script.replace("passes = len(t['norm_layers'])", 'passes = 0', 1)
  assert zero_passes != script
  done = subprocess.run([sys.executable, '-c', zero_passes], cwd=tmp_path,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  approximate = np.asarray(Image.open(tmp_path / 'big_translated.png')).astype(int)
  assert np.abs(approximate - expected).max() > 1
