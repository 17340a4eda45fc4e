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

