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
from cyclegan_jax import checkpoints
from cyclegan_jax import models
from cyclegan_jax import results_page
from cyclegan_jax import torch_import

torch = pytest.importorskip('torch')
nn = torch.nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The official layer layout (junyanz/pytorch-CycleGAN-and-pix2pix
# models/networks.py, norm 'instance'), written out so that the state dict
# keys are the official ones.
def _norm(track_running_stats):
  return lambda c: nn.InstanceNorm2d(c, affine=False, track_running_stats=track_running_stats)


class ResnetBlock(nn.Module):

  def __init__(self, dim, norm, dropout):
    super().__init__()
    layers = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), norm(dim), nn.ReLU(True)]
    layers += [nn.Dropout(0.5)] if dropout else []
    layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), norm(dim)]
    self.conv_block = nn.Sequential(*layers)

  def forward(self, x):
    return x + self.conv_block(x)


class ResnetGenerator(nn.Module):

  def __init__(self, ngf=8, n_blocks=2, track_running_stats=False, dropout=False):
    super().__init__()
    norm = _norm(track_running_stats)
    layers = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), norm(ngf), nn.ReLU(True)]
    for mult in (1, 2):
      layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1),
                 norm(ngf * mult * 2), nn.ReLU(True)]
    layers += [ResnetBlock(ngf * 4, norm, dropout) for _ in range(n_blocks)]
    for mult in (4, 2):
      layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1,
                                    output_padding=1),
                 norm(ngf * mult // 2), nn.ReLU(True)]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
    self.model = nn.Sequential(*layers)

  def forward(self, x):
    return self.model(x)


class UnetBlock(nn.Module):

  def __init__(self, outer, inner, submodule=None, outermost=False, innermost=False):
    super().__init__()
    self.outermost = outermost
    down = nn.Conv2d(outer if not outermost else 3, inner, 4, stride=2, padding=1)
    up = nn.ConvTranspose2d(inner if innermost else inner * 2, outer, 4, stride=2, padding=1)
    if outermost:
      layers = [down, submodule, nn.ReLU(True), up, nn.Tanh()]
    elif innermost:
      layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True), up, nn.InstanceNorm2d(outer)]
    else:
      layers = [nn.LeakyReLU(0.2, True), down, nn.InstanceNorm2d(inner), submodule,
                nn.ReLU(True), up, nn.InstanceNorm2d(outer)]
    self.model = nn.Sequential(*layers)

  def forward(self, x):
    return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):

  def __init__(self, num_downs, ngf):
    super().__init__()
    block = UnetBlock(ngf * 8, ngf * 8, innermost=True)
    for _ in range(num_downs - 5):
      block = UnetBlock(ngf * 8, ngf * 8, block)
    for mult in (4, 2, 1):
      block = UnetBlock(ngf * mult, ngf * mult * 2, block)
    self.model = UnetBlock(3, ngf, block, outermost=True)

  def forward(self, x):
    return self.model(x)


def _save(net, path, prefix='', legacy=False):
  # legacy: the pre-1.6 file format that old official checkpoints use.
  torch.save({prefix + k: v for k, v in net.state_dict().items()}, path,
             _use_new_zipfile_serialization=not legacy)
  return str(path)


def _torch_output(net, images):
  """NHWC in [-1, 1] -> NHWC. train(): an InstanceNorm2d with running
  statistics would use them in eval(); official test code (and we) use each
  image's own statistics, which is what train() does. No dropout here."""
  net.train()
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


def test_one_checkpoint_serves_both_directions_with_a_warning(tmp_path, capsys, image_folder):
  torch.manual_seed(5)
  path = _save(ResnetGenerator(), tmp_path / 'horse2zebra.pth')
  config = tiny.get_config()
  config.data.image_dir = image_folder
  workdir = str(tmp_path / 'run')
  torch_import.import_torch_checkpoints(config, workdir, path)
  out = capsys.readouterr().out
  assert 'WARNING: no --torch_checkpoint_b, so gen_ba (BtoA) is a copy' in out
  assert checkpoints.load_config(workdir).model.generator == 'resnet_2blocks'
  step, params = checkpoints.load_params(workdir, ('gen_ab', 'gen_ba'))
  assert step == 0
  expected = torch_import.load_generator_params(path, config.model)
  for name in ('gen_ab', 'gen_ba'):
    jax.tree.map(np.testing.assert_array_equal, params[name], expected)
  # --mode=test reads it too.
  page = results_page.write_results_page(workdir, num_test=1)
  assert page == os.path.join(workdir, 'results', '0', 'index.html')


def _config(generator='resnet_2blocks', ngf=8):
  config = tiny.get_config()
  config.model.generator, config.model.ngf = generator, ngf
  return config.model


@pytest.mark.parametrize('net,model_config,message', [
    (lambda: ResnetGenerator(n_blocks=3), _config(),
     r"no key model\.12\.weight \(6 missing, 10 unexpected\); the checkpoint looks like "
     r"resnet_3blocks with ngf=8 but config\.model\.generator='resnet_2blocks', "
     r"config\.model\.ngf=8, config\.model\.dropout=False$"),
    (lambda: ResnetGenerator(ngf=4), _config(),
     r'model\.1\.weight has shape \(4, 3, 7, 7\), the config expects \(8, 3, 7, 7\); the '
     r'checkpoint looks like resnet_2blocks with ngf=4 but .*config\.model\.ngf=8'),
    (lambda: UnetGenerator(7, 4), _config(),
     r"no key model\.1\.weight .*looks like unet_128 with ngf=4 but "
     r"config\.model\.generator='resnet_2blocks'"),
    (lambda: ResnetGenerator(dropout=True), _config(),
     r'no key model\.10\.conv_block\.5\.weight .*looks like resnet_2blocks with ngf=8 and '
     r'dropout but .*config\.model\.dropout=False'),
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
  net = ResnetGenerator()
  net.model[2] = nn.BatchNorm2d(8)  # pix2pix's --norm batch.
  path = _save(net, tmp_path / 'bn.pth')
  with pytest.raises(ValueError, match=f'^{path}: model.2 is a batch norm'):
    torch_import.load_generator_params(path, _config())


def test_pix2pix_and_batch_norm_configs_are_refused(tmp_path):
  path = _save(ResnetGenerator(), tmp_path / 'G.pth')
  config = tiny.get_config()
  with config.unlocked():
    config.model.norm = 'batch'
  with pytest.raises(ValueError, match="^config.model.norm='batch': only generators with "
                                       'instance norm can be imported$'):
    torch_import.load_generator_params(path, config.model)
  with config.unlocked():
    config.model.kind = 'pix2pix'
  with pytest.raises(ValueError, match="^config.model.kind='pix2pix': --mode=import_torch "
                                       'writes CycleGAN workdirs only$'):
    torch_import.import_torch_checkpoints(config, str(tmp_path / 'run'), path)


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
