"""Importing official PyTorch generators: the same outputs as PyTorch, a workdir
the CLI translates with, and one-line errors for files that do not fit."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

from configs import tiny
from configs import tiny_pix2pix
from cyclegan_jax import configuration
from cyclegan_jax import checkpoints
from cyclegan_jax import models
from cyclegan_jax import results_page
from cyclegan_jax import torch_import

torch = pytest.importorskip('torch')
from cyclegan_jax import torch_reference  # noqa: E402  (needs torch)
from cyclegan_jax.torch_reference import UnetGenerator  # noqa: E402  (official layout)
nn = torch.nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ResnetGenerator(ngf=8, n_blocks=2, **kwargs):  # Tiny by default here.
  return torch_reference.ResnetGenerator(ngf, n_blocks, **kwargs)


def _randomise_batch_norms(net, seed):
  """Batch norms unlike their init (weight 1, bias 0), and running statistics
  far from any batch's, which must not be used."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, nn.BatchNorm2d):
        c = m.num_features
        m.weight.copy_(0.5 + torch.rand(c, generator=generator))
        m.bias.copy_(0.3 * torch.randn(c, generator=generator))
        m.running_mean.copy_(torch.randn(c, generator=generator))
        m.running_var.copy_(0.2 + 3 * torch.rand(c, generator=generator))
        m.num_batches_tracked.fill_(1234)
  return net


def _save(net, path, prefix='', legacy=False):
  # legacy: the pre-1.6 file format that old official checkpoints use.
  torch.save({prefix + k: v for k, v in net.state_dict().items()}, path,
             _use_new_zipfile_serialization=not legacy)
  return str(path)


def _torch_output(net, images):
  """NHWC in [-1, 1] -> NHWC, as the official test.py runs a generator (no
  --eval): train(), so that norms use the statistics of the batch (an
  InstanceNorm2d or BatchNorm2d with running statistics would use those in
  eval()); dropout is switched off here, for a deterministic comparison."""
  net.train()
  for m in net.modules():
    if isinstance(m, nn.Dropout):
      m.eval()
  with torch.no_grad():
    return net(torch.from_numpy(images).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()


def _jax_output(config, params, images):
  generator = models.create_generator(config.model)
  return np.asarray(generator.apply({'params': params}, images, train=False))


def _images(h, w, n=2, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (n, h, w, 3)).astype(np.float32)


@pytest.mark.parametrize('track_running_stats', [False, True])
def test_resnet_outputs_match_pytorch(tmp_path, track_running_stats):
  torch.manual_seed(0)
  net = ResnetGenerator(ngf=8, n_blocks=2, track_running_stats=track_running_stats)
  # Old checkpoints: running statistics of instance norms, in the old file format.
  path = _save(net, tmp_path / 'G.pth', legacy=track_running_stats)
  assert any(k.endswith('running_mean') for k in torch.load(path)) == track_running_stats
  config = tiny.get_config()  # resnet_2blocks, ngf 8.
  params = torch_import.load_generator_params(path, config.model)
  for h, w in ((32, 32), (48, 64)):
    images = _images(h, w)
    diff = np.abs(_jax_output(config, params, images) - _torch_output(net, images)).max()
    print(f'resnet_2blocks {h}x{w}: max abs difference {diff:.2e}')
    assert diff < 1e-4


def test_resnet_with_dropout_and_data_parallel_prefix(tmp_path):
  torch.manual_seed(1)
  net = ResnetGenerator(ngf=4, n_blocks=3, dropout=True)
  path = _save(net, tmp_path / 'G.pth', prefix='module.')  # As nn.DataParallel saves.
  config = tiny.get_config()
  config.model.generator, config.model.ngf, config.model.dropout = 'resnet_3blocks', 4, True
  params = torch_import.load_generator_params(path, config.model)
  net.eval()  # Dropout off; no running statistics here, so the norms are the same.
  with torch.no_grad():
    images = _images(32, 32)
    expected = net(torch.from_numpy(images).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  assert np.abs(_jax_output(config, params, images) - expected).max() < 1e-4


def test_unet_outputs_match_pytorch(tmp_path):
  torch.manual_seed(2)
  net = UnetGenerator(num_downs=7, ngf=4)
  path = _save(net, tmp_path / 'G.pth')
  assert 'model.model.1.model.3.model.3.model.3.model.3.model.3.model.3.weight' in torch.load(path)
  config = tiny.get_config()
  config.model.generator, config.model.ngf = 'unet_128', 4
  params = torch_import.load_generator_params(path, config.model)
  for h, w in ((128, 128), (128, 256)):
    images = _images(h, w, n=1)
    diff = np.abs(_jax_output(config, params, images) - _torch_output(net, images)).max()
    print(f'unet_128 {h}x{w}: max abs difference {diff:.2e}')
    assert diff < 1e-4


def _pix2pix_config(generator, ngf, dropout=True):
  """A pix2pix model config (batch norm), dropout off at test time so that the
  comparison with PyTorch is deterministic."""
  config = tiny_pix2pix.get_config()
  config.model.generator, config.model.ngf, config.model.dropout = generator, ngf, dropout
  config.model.dropout_at_test = False
  return config


def test_unet_with_batch_norm_and_dropout_matches_pytorch(tmp_path):
  """pix2pix's generator (unet, --norm batch, dropout): the running statistics
  are not imported; with train() PyTorch normalises with the batch's
  statistics, as the official test.py does and as we do."""
  torch.manual_seed(6)
  net = _randomise_batch_norms(UnetGenerator(num_downs=6, ngf=4, norm='batch', dropout=True), 6)
  assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == 1  # unet_64: one level.
  path = _save(net, tmp_path / 'latest_net_G.pth')
  state = torch.load(path)
  assert 'model.model.1.model.2.running_mean' in state and 'model.model.0.bias' not in state
  config = _pix2pix_config('unet_64', 4)
  params = torch_import.load_generator_params(path, config.model)
  assert sum(1 for _ in jax.tree.leaves(params)) == len(state) - 3 * 9  # 9 norms: 3 buffers each.
  np.testing.assert_array_equal(params['BatchNorm_0']['scale'],
                                state['model.model.1.model.2.weight'].numpy())
  for h, w, n in ((64, 64, 1), (64, 128, 1), (64, 64, 2)):
    images = _images(h, w, n=n, seed=h + w + n)
    expected = _torch_output(net, images)
    diff = np.abs(_jax_output(config, params, images) - expected).max()
    print(f'unet_64 batch norm {n}x{h}x{w}: max abs difference {diff:.2e}')
    assert diff < 1e-4
  # The running statistics would have changed the output: not using them matters.
  net.eval()
  with torch.no_grad():
    eval_mode = net(torch.from_numpy(images).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  assert np.abs(eval_mode - expected).max() > 0.1
  # The same weights into a config without dropout (a U-Net's state dict does
  # not record dropout), and saved as older official files are: the pre-1.6
  # format, no num_batches_tracked (PyTorch < 0.4.1).
  old = {k: v for k, v in state.items() if not k.endswith('num_batches_tracked')}
  torch.save(old, tmp_path / 'old.pth', _use_new_zipfile_serialization=False)
  no_dropout = torch_import.load_generator_params(str(tmp_path / 'old.pth'),
                                                  _pix2pix_config('unet_64', 4, False).model)
  jax.tree.map(np.testing.assert_array_equal, no_dropout, params)


def test_resnet_with_batch_norm_and_dropout_matches_pytorch(tmp_path):
  torch.manual_seed(7)
  net = _randomise_batch_norms(ResnetGenerator(ngf=4, n_blocks=2, dropout=True, norm='batch'), 7)
  path = _save(net, tmp_path / 'G.pth')
  assert 'model.10.conv_block.7.weight' in torch.load(path)  # The second norm, after dropout.
  config = _pix2pix_config('resnet_2blocks', 4)
  params = torch_import.load_generator_params(path, config.model)
  images = _images(32, 32, n=1)
  diff = np.abs(_jax_output(config, params, images) - _torch_output(net, images)).max()
  print(f'resnet_2blocks batch norm 1x32x32: max abs difference {diff:.2e}')
  assert diff < 1e-4


def test_biases_land_in_the_official_places(tmp_path):
  """Biases of convolutions followed by instance norm change no output, so the
  output tests cannot see them; check them against the official names."""
  torch.manual_seed(3)
  net = ResnetGenerator(ngf=8, n_blocks=2)
  state = net.state_dict()
  params = torch_import.load_generator_params(_save(net, tmp_path / 'G.pth'),
                                              tiny.get_config().model)
  official = {'model.1': ['Conv_0'], 'model.4': ['Conv_1'], 'model.7': ['Conv_2'],
              'model.10.conv_block.1': ['ResnetBlock_0', 'Conv_0'],
              'model.10.conv_block.5': ['ResnetBlock_0', 'Conv_1'],
              'model.11.conv_block.1': ['ResnetBlock_1', 'Conv_0'],
              'model.11.conv_block.5': ['ResnetBlock_1', 'Conv_1'],
              'model.12': ['ConvTranspose_0'], 'model.15': ['ConvTranspose_1'],
              'model.19': ['Conv_3']}
  assert len(state) == 2 * len(official)
  for module, flax_path in official.items():
    leaf = params
    for name in flax_path:
      leaf = leaf[name]
    np.testing.assert_array_equal(leaf['bias'], state[module + '.bias'].numpy())


@pytest.mark.slow
def test_import_then_translate_through_the_cli(tmp_path):
  torch.manual_seed(4)
  net_a, net_b = ResnetGenerator(), ResnetGenerator()
  path_a, path_b = _save(net_a, tmp_path / 'G_A.pth'), _save(net_b, tmp_path / 'G_B.pth')
  workdir = tmp_path / 'run'
  main = [sys.executable, 'main.py']
  run = lambda *args: subprocess.run([*main, *args], cwd=REPO, capture_output=True, text=True,
                                     timeout=300)
  result = run('--mode=import_torch', '--config=configs/tiny.py', f'--workdir={workdir}',
               f'--torch_checkpoint={path_a}', f'--torch_checkpoint_b={path_b}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'gen_ba (BtoA, official G_B): 50,947 parameters from {path_b}' in result.stdout
  assert 'WARNING' not in result.stdout
  assert json.loads((workdir / 'torch_import.json').read_text()) == {'gen_ab': path_a,
                                                                     'gen_ba': path_b}

  inputs = tmp_path / 'in'
  inputs.mkdir()
  image = np.random.default_rng(0).integers(0, 256, (40, 28, 3), dtype=np.uint8)
  Image.fromarray(image).save(inputs / 'x.png')
  result = run('--mode=translate', f'--workdir={workdir}', f'--input={inputs}',
               f'--output={tmp_path / "out"}', '--direction=BtoA')
  assert result.returncode == 0, result.stderr[-3000:]
  translated = np.asarray(Image.open(tmp_path / 'out' / 'x.png')).astype(int)
  expected = _torch_output(net_b, image[None].astype(np.float32) / 127.5 - 1)[0]
  expected = np.clip((expected + 1) * 127.5 + 0.5, 0, 255).astype(int)
  assert np.abs(translated - expected).max() <= 1  # Rounding of values within 1e-4.

  # A second import into the same workdir is refused, one line, nothing touched.
  before = sorted(os.listdir(checkpoints.checkpoint_dir(workdir)))
  result = run('--mode=import_torch', '--config=configs/tiny.py', f'--workdir={workdir}',
               f'--torch_checkpoint={path_a}')
  assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: {workdir} already holds checkpoints ({workdir}/checkpoints); import into a new '
      '--workdir (importing never overwrites checkpoints)')
  assert sorted(os.listdir(checkpoints.checkpoint_dir(workdir))) == before


@pytest.mark.slow
def test_pix2pix_import_then_translate_through_the_cli(tmp_path):
  torch.manual_seed(8)
  net = _randomise_batch_norms(UnetGenerator(num_downs=5, ngf=8, norm='batch'), 8)
  path = _save(net, tmp_path / 'latest_net_G.pth')
  workdir = tmp_path / 'run'
  run = lambda *args: subprocess.run([sys.executable, 'main.py', *args], cwd=REPO,
                                     capture_output=True, text=True, timeout=300)
  # As configs/pix2pix_facades.py: BtoA. dropout_at_test off (unet_32 has no
  # dropout layers anyway): the translation is deterministic.
  result = run('--mode=import_torch', '--config=configs/tiny_pix2pix.py',
               '--config.data.direction=BtoA', '--config.model.dropout_at_test=False',
               f'--workdir={workdir}', f'--torch_checkpoint={path}')
  assert result.returncode == 0, result.stderr[-3000:]
  count = sum(p.numel() for p in net.parameters())  # 261,715: buffers not counted.
  assert f'gen (BtoA, official G): {count:,} parameters from {path}' in result.stdout
  assert 'Dropout' not in result.stdout  # unet_32 has no dropout layers.
  assert ('Batch norm: the weight and bias of the 7 BatchNorm2d of the generator were imported, '
          'their running_mean/running_var were not') in result.stdout
  assert json.loads((workdir / 'torch_import.json').read_text()) == {'gen': path}
  config = configuration.load(workdir)
  assert (config.model.kind, config.model.norm, config.data.direction) == ('pix2pix', 'batch',
                                                                           'BtoA')
  step, params = checkpoints.load_params(workdir, ('gen', 'disc'))
  assert step == 0 and set(params['disc']) == {'Conv_0', 'Conv_1', 'Conv_2', 'Conv_3', 'Conv_4',
                                               'BatchNorm_0', 'BatchNorm_1', 'BatchNorm_2'}

  inputs = tmp_path / 'in'
  inputs.mkdir()
  image = np.random.default_rng(1).integers(0, 256, (32, 64, 3), dtype=np.uint8)
  Image.fromarray(image).save(inputs / 'label.png')
  result = run('--mode=translate', f'--workdir={workdir}', f'--input={inputs}',
               f'--output={tmp_path / "out"}')
  assert result.returncode == 0, result.stderr[-3000:]
  translated = np.asarray(Image.open(tmp_path / 'out' / 'label.png')).astype(int)
  expected = _torch_output(net, image[None].astype(np.float32) / 127.5 - 1)[0]
  expected = np.clip((expected + 1) * 127.5 + 0.5, 0, 255).astype(int)
  assert np.abs(translated - expected).max() <= 1  # Rounding of values within 1e-4.


def test_pix2pix_refuses_a_second_checkpoint(tmp_path):
  path = _save(UnetGenerator(5, 8, norm='batch'), tmp_path / 'latest_net_G.pth')
  workdir = tmp_path / 'run'
  with pytest.raises(ValueError) as error:
    torch_import.import_torch_checkpoints(tiny_pix2pix.get_config(), str(workdir), path, path)
  assert str(error.value) == (f'--torch_checkpoint_b={path}: a pix2pix model has one generator '
                              '(latest_net_G.pth); pass it as --torch_checkpoint only')
  assert not workdir.exists()


def test_cut_is_refused_by_name(tmp_path):
  from configs import tiny_cut  # pylint: disable=import-outside-toplevel
  workdir = tmp_path / 'run'
  with pytest.raises(ValueError, match=r'^config.model.antialias: expected False for '
                                       r'--mode=import_torch'):
    torch_import.import_torch_checkpoints(tiny_cut.get_config(), str(workdir), 'G.pth')
  assert not workdir.exists()


def test_one_checkpoint_serves_both_directions_with_a_warning(tmp_path, capsys, image_folder):
  torch.manual_seed(5)
  path = _save(ResnetGenerator(), tmp_path / 'horse2zebra.pth')
  config = tiny.get_config()
  config.data.image_dir = image_folder
  workdir = str(tmp_path / 'run')
  torch_import.import_torch_checkpoints(config, workdir, path)
  out = capsys.readouterr().out
  assert 'WARNING: no --torch_checkpoint_b, so gen_ba (BtoA) is a copy' in out
  assert configuration.load(workdir).model.generator == 'resnet_2blocks'
  step, params = checkpoints.load_params(workdir, ('gen_ab', 'gen_ba'))
  assert step == 0
  expected = torch_import.load_generator_params(path, config.model)
  for name in ('gen_ab', 'gen_ba'):
    jax.tree.map(np.testing.assert_array_equal, params[name], expected)
  # --mode=test reads it too.
  page = results_page.write_results_page(workdir, num_test=1)
  assert page == os.path.join(workdir, 'results', '0', 'index.html')


def _config(generator='resnet_2blocks', ngf=8, norm='instance'):
  config = tiny.get_config()
  config.model.generator, config.model.ngf, config.model.norm = generator, ngf, norm
  return config.model


@pytest.mark.parametrize('net,model_config,message', [
    (lambda: ResnetGenerator(n_blocks=3), _config(),
     r"no key model\.12\.weight \(6 missing, 10 unexpected\); the checkpoint looks like "
     r"resnet_3blocks with ngf=8, instance norm but config\.model\.generator='resnet_2blocks', "
     r"config\.model\.ngf=8, config\.model\.norm='instance', config\.model\.dropout=False$"),
    (lambda: ResnetGenerator(ngf=4), _config(),
     r'model\.1\.weight has shape \(4, 3, 7, 7\), the config expects \(8, 3, 7, 7\); the '
     r'checkpoint looks like resnet_2blocks with ngf=4, instance norm but .*config\.model\.ngf=8'),
    (lambda: UnetGenerator(7, 4), _config(),
     r"no key model\.1\.weight .*looks like unet_128 with ngf=4, instance norm but "
     r"config\.model\.generator='resnet_2blocks'"),
    (lambda: ResnetGenerator(dropout=True), _config(),
     r'no key model\.10\.conv_block\.5\.weight .*looks like resnet_2blocks with ngf=8, '
     r'instance norm and dropout but .*config\.model\.dropout=False'),
    (lambda: ResnetGenerator(dropout=True, norm='batch'), _config(norm='batch'),
     r'no key model\.10\.conv_block\.5\.weight .*looks like resnet_2blocks with ngf=8, '
     r'batch norm and dropout but .*config\.model\.dropout=False'),
    (lambda: UnetGenerator(5, 8, norm='batch'), _config('unet_64', norm='batch'),
     r"no key model\.model\.1\.model\.3\.model\.3\.model\.3\.model\.5\.weight "
     r"\(9 missing, 3 unexpected\); the checkpoint looks like unet_32 with ngf=8, batch norm but "
     r"config\.model\.generator='unet_64', config\.model\.ngf=8, config\.model\.norm='batch'"),
])
def test_a_checkpoint_of_another_architecture_is_named(tmp_path, net, model_config, message):
  path = _save(net(), tmp_path / 'G.pth')
  with pytest.raises(ValueError, match=f'^{path}: {message}'):
    torch_import.load_generator_params(path, model_config)


def test_unreadable_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match=f'^{tmp_path}/nowhere.pth: no such file'):
    torch_import.load_generator_params(str(tmp_path / 'nowhere.pth'), _config())
  (tmp_path / 'junk.pth').write_bytes(b'not a checkpoint')
  with pytest.raises(ValueError, match=f'^{tmp_path}/junk.pth: cannot read this file as a '
                                       r'PyTorch state dict \('):
    torch_import.load_generator_params(str(tmp_path / 'junk.pth'), _config())
  torch.save([torch.zeros(1)], tmp_path / 'list.pth')
  with pytest.raises(ValueError, match=f'^{tmp_path}/list.pth: holds a list, not a state dict'):
    torch_import.load_generator_params(str(tmp_path / 'list.pth'), _config())


def test_a_checkpoint_of_another_norm_is_named(tmp_path):
  """One line naming the norm the checkpoint was trained with and the fix."""
  batch = _save(ResnetGenerator(norm='batch'), tmp_path / 'batch.pth')
  with pytest.raises(ValueError) as error:
    torch_import.load_generator_params(batch, _config())
  assert str(error.value) == (
      f"{batch}: this generator was trained with --norm batch but config.model.norm='instance'; "
      'import it with --config.model.norm=batch (or a pix2pix config) (the checkpoint looks like '
      "resnet_2blocks with ngf=8, batch norm but config.model.generator='resnet_2blocks', "
      "config.model.ngf=8, config.model.norm='instance', config.model.dropout=False)")
  # An instance-norm pix2pix generator (official --norm instance) into a
  # batch-norm pix2pix config: refused before anything is written.
  instance = _save(UnetGenerator(5, 8), tmp_path / 'instance.pth')
  workdir = tmp_path / 'run'
  with pytest.raises(ValueError) as error:
    torch_import.import_torch_checkpoints(tiny_pix2pix.get_config(), str(workdir), instance)
  assert str(error.value) == (
      f"{instance}: this generator was trained with --norm instance but "
      "config.model.norm='batch'; import it with --config.model.norm=instance (the checkpoint "
      "looks like unet_32 with ngf=8, instance norm but config.model.generator='unet_32', "
      "config.model.ngf=8, config.model.norm='batch', config.model.dropout=True)")
  assert not workdir.exists()
  # The official --norm none: no norms, no biases; models.py has no such generator.
  net = ResnetGenerator(norm='batch')
  state = {k: v for k, v in net.state_dict().items() if v.ndim != 1 or k == 'model.19.bias'}
  torch.save(state, tmp_path / 'none.pth')
  with pytest.raises(ValueError, match=f"^{tmp_path}/none.pth: this generator was trained with "
                                       "--norm none but config.model.norm='instance'; models.py "
                                       'has no generator without norm layers'):
    torch_import.load_generator_params(str(tmp_path / 'none.pth'), _config())


def test_failed_import_writes_nothing(tmp_path):
  workdir = tmp_path / 'run'
  path = _save(ResnetGenerator(n_blocks=3), tmp_path / 'G.pth')
  with pytest.raises(ValueError, match='looks like resnet_3blocks'):
    torch_import.import_torch_checkpoints(tiny.get_config(), str(workdir), path)
  assert not workdir.exists()


def test_missing_torch_is_one_line(tmp_path, monkeypatch):
  path = _save(ResnetGenerator(), tmp_path / 'G.pth')
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` raises ImportError.
  with pytest.raises(ModuleNotFoundError, match='needs torch, which is not installed: '
                                                'pip install torch$'):
    torch_import.load_generator_params(path, _config())


def test_an_imported_official_generator_exports_to_onnx(tmp_path):
  """Official PyTorch weights -> --mode=import_torch workdir -> ONNX file:
  ONNX Runtime gives the official network's output."""
  ort = pytest.importorskip('onnxruntime')  # The "export" extra.
  from cyclegan_jax import export  # pylint: disable=import-outside-toplevel
  torch.manual_seed(5)
  net = ResnetGenerator()
  workdir = str(tmp_path / 'run')
  torch_import.import_torch_checkpoints(tiny.get_config(), workdir,
                                        _save(net, tmp_path / 'G_A.pth'))
  path, = export.export_workdir(workdir, str(tmp_path / 'onnx'), 'AtoB')
  images = np.random.default_rng(0).uniform(-1, 1, (2, 20, 12, 3)).astype(np.float32)
  got = ort.InferenceSession(path, providers=['CPUExecutionProvider']).run(
      None, {'image': images})[0]
  np.testing.assert_allclose(got, _torch_output(net, images), atol=1e-4)


@pytest.mark.parametrize('conditioning', ['official', 'fixed'])
def test_a_unsb_generator_imports_with_its_outputs(tmp_path, conditioning):
  """UNSB's latest_net_G.pth (ResnetGenerator_ncsn, its blur buffers
  included): one step G(x, t, z) equals the reference module's within 1e-5,
  under either time conditioning, and the imported workdir translates."""
  from configs import tiny_unsb  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import families  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import translate  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import unsb_reference  # pylint: disable=import-outside-toplevel
  from tests import synthetic  # pylint: disable=import-outside-toplevel
  config = tiny_unsb.get_config()
  config.model.unsb_time_conditioning = conditioning
  torch.manual_seed(3)
  net = unsb_reference.init_weights(unsb_reference.ResnetGeneratorNcsn(
      ngf=8, n_blocks=2, n_mlp=1, time_conditioning=conditioning)).eval()
  with torch.no_grad():  # Away from the tiny init, so that the comparison means something.
    for p in net.parameters():
      p.mul_(20 if p.ndim > 1 else 1).add_(0 if p.ndim > 1 else 0.1)
  path = str(tmp_path / 'latest_net_G.pth')
  torch.save(net.state_dict(), path)
  assert any(k.endswith('.filt') for k in net.state_dict())
  params = torch_import.load_generator_params(path, config.model)
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  z = rng.standard_normal((2, 32)).astype(np.float32)
  t = np.array([0, 2])
  generator = families.get(config).create_generators(config.model)['gen']
  ours = np.asarray(generator.apply({'params': params}, x, t, z))
  with torch.no_grad():
    expected = net(torch.from_numpy(x.transpose(0, 3, 1, 2)), torch.from_numpy(t),
                   torch.from_numpy(z)).numpy()
  np.testing.assert_allclose(ours.transpose(0, 3, 1, 2), expected, atol=1e-5)
  if conditioning == 'official':
    root = synthetic.make_unpaired_folder(str(tmp_path / 'data'), n_train=2, n_test=2)
    workdir = str(tmp_path / 'run')
    torch_import.import_torch_checkpoints(config, workdir, path)
    written = translate.translate_folder(workdir, f'{root}/testA', str(tmp_path / 'out'))
    assert len(written) == 2
  # Another layout is named.
  config.model.unsb_n_mlp = 3
  with pytest.raises(ValueError, match=r'no key z_transform.5.weight .*looks like a UNSB '
                                       r'generator \(resnet_2blocks conditioned on t and z\) '
                                       r'with ngf=8, unsb_n_mlp=1'):
    torch_import.load_generator_params(path, config.model)
