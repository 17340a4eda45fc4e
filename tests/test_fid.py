"""FID/KID statistics against direct computations; the FID Inception's layout."""

import ast
import collections
import importlib
import importlib.util
import os
import types
import warnings

import jax
import jax.numpy as jnp
from jax.extend import core as jax_core
import numpy as np
import pytest
import scipy.linalg

from cyclegan_jax import fid, inception


def _features(n, d, seed, shift=0.0):
  rng = np.random.default_rng(seed)
  mixing = rng.normal(size=(d, d)) / np.sqrt(d)  # Correlated, full-rank covariance.
  return rng.normal(size=(n, d)) @ mixing + shift


def _psd_sqrt(s):
  w, v = np.linalg.eigh(s)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _reference_fid(x, y):
  """Tr sqrtm(S1 S2) = Tr sqrt(S1^1/2 S2 S1^1/2), a symmetric PSD matrix."""
  mu1, mu2 = x.mean(0), y.mean(0)
  s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
  r = _psd_sqrt(s1)
  tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)).sum()
  return np.sum((mu1 - mu2)**2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean


@pytest.mark.parametrize('n,d', [(200, 16), (12, 20)])  # Full rank, and singular (n < d).
def test_frechet_distance_matches_eigendecomposition(n, d):
  x, y = _features(n, d, 0), _features(n + 5, d, 1, shift=0.3)
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # No sqrtm deprecation or singularity warnings.
    got = fid.fid_from_features(x, y)
  np.testing.assert_allclose(got, _reference_fid(x, y), rtol=1e-7)


def test_frechet_distance_self_symmetry_and_translation():
  x, y = _features(300, 16, 2), _features(250, 16, 3)
  stats_x = fid.feature_statistics(x)
  assert stats_x[0].dtype == np.float64 and stats_x[1].shape == (16, 16)
  scale = np.trace(stats_x[1])
  assert abs(fid.frechet_distance(*stats_x, *stats_x)) < 1e-6 * scale
  np.testing.assert_allclose(fid.fid_from_features(x, y), fid.fid_from_features(y, x), rtol=1e-9)
  delta = np.linspace(-1, 1, 16)
  np.testing.assert_allclose(fid.fid_from_features(x + delta, x), delta @ delta,
                             rtol=0, atol=1e-6 * scale)


def test_frechet_distance_retries_with_ridge_and_rejects_complex(monkeypatch):
  s1, s2 = np.diag([1.0, 4.0]), np.diag([9.0, 1.0])
  # Non-finite sqrtm: pytorch-fid's retry adds eps to both diagonals.
  calls, sqrtm = [], fid._sqrtm

  def nan_once(a):
    calls.append(a)
    return np.full_like(a, np.nan) if len(calls) == 1 else sqrtm(a)

  monkeypatch.setattr(fid, '_sqrtm', nan_once)
  got = fid.frechet_distance(np.zeros(2), s1, np.zeros(2), s2, eps=0.5)
  np.testing.assert_allclose(calls[1], (s1 + 0.5 * np.eye(2)) @ (s2 + 0.5 * np.eye(2)))
  np.testing.assert_allclose(got, 15 - 2 * (np.sqrt(1.5 * 9.5) + np.sqrt(4.5 * 1.5)))
  monkeypatch.setattr(fid, '_sqrtm', sqrtm)
  with pytest.raises(ValueError, match='imaginary'):  # Not covariances: sqrtm(-1) = i.
    fid.frechet_distance(np.zeros(2), np.diag([1.0, 1.0]), np.zeros(2), np.diag([-1.0, 1.0]))


def test_statistics_reject_bad_features():
  with pytest.raises(ValueError, match='at least 2'):
    fid.feature_statistics(np.ones((1, 4)))
  with pytest.raises(ValueError, match='dimensions differ'):
    fid.fid_from_features(np.ones((3, 4)), np.ones((3, 5)))
  with pytest.raises(ValueError, match='at least 2'):
    fid.kernel_inception_distance(np.ones((5, 4)), np.ones((1, 4)))
  with pytest.raises(ValueError, match='dimensions differ'):
    fid.kernel_inception_distance(np.ones((5, 4)), np.ones((5, 3)))


def _brute_force_mmd2(x, y):
  d, m = x.shape[1], x.shape[0]
  k = lambda a, b: (sum(a[i] * b[i] for i in range(d)) / d + 1)**3
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
  yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
  return (xx + yy) / (m * (m - 1)) - 2 * xy / m**2


def test_kid_is_the_unbiased_estimator():
  x, y = _features(6, 4, 4), _features(6, 4, 5, shift=0.5)
  # One subset of the full size is a permutation of each set; MMD^2 ignores order.
  mean, std = fid.kernel_inception_distance(x, y, num_subsets=1, max_subset_size=1000)
  np.testing.assert_allclose(mean, _brute_force_mmd2(x, y), rtol=1e-12)
  assert std == 0.0


def test_kid_near_zero_for_one_distribution_and_positive_when_shifted():
  x, y = np.split(_features(800, 8, 6), 2)  # Two samples of one distribution.
  same_mean, same_std = fid.kernel_inception_distance(x, y, num_subsets=20, max_subset_size=200)
  shifted_mean, _ = fid.kernel_inception_distance(x, y + 0.5, num_subsets=20,
                                                  max_subset_size=200)
  assert same_std > 0 and abs(same_mean) < same_std  # Unbiased: centred on 0.
  assert abs(same_mean) < 0.05 * shifted_mean
  assert shifted_mean > 10 * same_std
  # Subsets come from the seed.
  assert fid.kernel_inception_distance(x, y, 3, 50, seed=1) == \
      fid.kernel_inception_distance(x, y, 3, 50, seed=1)


def _clean_fid_spec():
  """clean-fid (the clean mode's reference code), or a skip. .ci/run installs
  it without dependencies: its resize module needs only torch and PIL."""
  pytest.importorskip('torch')
  spec = importlib.util.find_spec('cleanfid')
  if spec is None:
    pytest.skip('clean-fid is not installed (pip install --no-deps clean-fid)')
  return spec


def _clean_fid_functions(*names) -> dict:
  """Functions of clean-fid's fid.py, run as written there. That module
  imports torchvision (for classes not used here), whose PyPI wheel does not
  load beside this project's torch: the functions' definitions are taken
  from its source and run with the names they use (numpy, scipy's linalg)."""
  path = os.path.join(os.path.dirname(_clean_fid_spec().origin), 'fid.py')
  with open(path) as f:
    tree = ast.parse(f.read())
  found = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in names]
  assert sorted(node.name for node in found) == sorted(names), path
  namespace = {'np': np, 'linalg': scipy.linalg}
  exec(compile(ast.Module(found, type_ignores=[]), path, 'exec'), namespace)  # pylint: disable=exec-used
  return {name: namespace[name] for name in names}


def test_clean_resize_is_clean_fids():
  """Down, up, odd and non-square sizes, noise and smooth images: the same
  float32 pixels as clean-fid's resizer ("clean": PIL bicubic on float)."""
  _clean_fid_spec()
  theirs = importlib.import_module('cleanfid.resize').build_resizer('clean')
  rng = np.random.default_rng(9)
  ramp = np.linspace(0, 255, 64 * 48).reshape(64, 48, 1).repeat(3, axis=2).astype(np.uint8)
  for image in (rng.integers(0, 256, (32, 32, 3), np.uint8), ramp,
                rng.integers(0, 256, (37, 300, 3), np.uint8),
                rng.integers(0, 256, (512, 401, 3), np.uint8)):
    ours = inception.resize_clean(image[None])[0]
    assert ours.shape == (299, 299, 3) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs(image))
  # Not the legacy resize: the antialiased bicubic differs when downsampling.
  big = rng.integers(0, 256, (1, 600, 600, 3), np.uint8)
  legacy = np.asarray(inception.resize_bilinear(big.astype(np.float32), 299))
  assert np.abs(inception.resize_clean(big) - legacy).mean() > 5
  with pytest.raises(ValueError, match=r'resize_clean: expected uint8 RGB images \(N, H, W, '
                                       r'3\), got float32 \(1, 8, 8, 3\)'):
    inception.resize_clean(np.zeros((1, 8, 8, 3), np.float32))


def test_fid_and_kid_formulas_are_clean_fids():
  """clean-fid's frechet_distance and kernel_distance on the same features.
  KID with subsets of every feature is exact (each subset is a permutation;
  MMD^2 ignores order), whatever the random subsets."""
  reference = types.SimpleNamespace(**_clean_fid_functions('frechet_distance',
                                                           'kernel_distance'))
  x, y = _features(40, 6, 10), _features(30, 6, 11, shift=0.3)
  np.testing.assert_allclose(
      fid.fid_from_features(x, y),
      reference.frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0),
                                 np.cov(y, rowvar=False)), rtol=1e-10)
  x = x[:30]  # Equal sizes: one subset of every feature on each side.
  ours, _ = fid.kernel_inception_distance(x, y, num_subsets=3, max_subset_size=30)
  np.testing.assert_allclose(ours, reference.kernel_distance(x, y, num_subsets=3,
                                                             max_subset_size=30), rtol=1e-10)


def _torch_bilinear(image, out_h, out_w):
  """upsample_bilinear2d's CPU loop (align_corners=False), pixel by pixel, HWC."""
  in_h, in_w = image.shape[:2]
  out = np.zeros((out_h, out_w) + image.shape[2:])

  def taps(o, in_size, out_size):
    r = max((in_size / out_size) * (o + 0.5) - 0.5, 0.0)
    i = int(r)
    return i, (1 if i < in_size - 1 else 0), r - i

  for oh in range(out_h):
    h, hp, hl = taps(oh, in_h, out_h)
    for ow in range(out_w):
      w, wp, wl = taps(ow, in_w, out_w)
      out[oh, ow] = ((1 - hl) * ((1 - wl) * image[h, w] + wl * image[h, w + wp]) +
                     hl * ((1 - wl) * image[h + hp, w] + wl * image[h + hp, w + wp]))
  return out


def test_resize_matches_pytorch_bilinear():
  row = jnp.arange(4.0).reshape(1, 1, 4, 1)
  # F.interpolate(torch.arange(4.).view(1, 1, 1, 4), size=(1, 8), mode='bilinear').
  np.testing.assert_allclose(inception.resize_bilinear(row, (1, 8))[0, 0, :, 0],
                             [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3], atol=1e-6)
  np.testing.assert_allclose(inception.resize_bilinear(row, (1, 2))[0, 0, :, 0], [0.5, 2.5])
  images = np.random.default_rng(8).random((2, 9, 7, 3)).astype(np.float32)
  for size in [(4, 13), (20, 3), (9, 7)]:  # Down/up, up/down, identity.
    got = np.asarray(inception.resize_bilinear(images, size))
    want = np.stack([_torch_bilinear(im, *size) for im in images])
    np.testing.assert_allclose(got, want, atol=1e-5)
  # jax.image.resize antialiases when downsampling, hence the explicit gather.
  antialiased = jax.image.resize(images, (2, 4, 3, 3), 'bilinear')
  assert np.abs(inception.resize_bilinear(images, (4, 3)) - antialiased).max() > 1e-2


def test_branch_average_pool_ignores_padding():
  ones = jnp.ones((1, 5, 5, 2))
  np.testing.assert_allclose(inception._avg_pool_3x3(ones), ones)


# torchvision's Inception3 as conv_block(in, out, kernel) calls, by module name.
def _a(i, pool):
  return {'branch1x1': (i, 64, 1, 1), 'branch5x5_1': (i, 48, 1, 1),
          'branch5x5_2': (48, 64, 5, 5), 'branch3x3dbl_1': (i, 64, 1, 1),
          'branch3x3dbl_2': (64, 96, 3, 3), 'branch3x3dbl_3': (96, 96, 3, 3),
          'branch_pool': (i, pool, 1, 1)}


def _c(i, c7):
  return {'branch1x1': (i, 192, 1, 1), 'branch7x7_1': (i, c7, 1, 1),
          'branch7x7_2': (c7, c7, 1, 7), 'branch7x7_3': (c7, 192, 7, 1),
          'branch7x7dbl_1': (i, c7, 1, 1), 'branch7x7dbl_2': (c7, c7, 7, 1),
          'branch7x7dbl_3': (c7, c7, 1, 7), 'branch7x7dbl_4': (c7, c7, 7, 1),
          'branch7x7dbl_5': (c7, 192, 1, 7), 'branch_pool': (i, 192, 1, 1)}


def _e(i):
  return {'branch1x1': (i, 320, 1, 1), 'branch3x3_1': (i, 384, 1, 1),
          'branch3x3_2a': (384, 384, 1, 3), 'branch3x3_2b': (384, 384, 3, 1),
          'branch3x3dbl_1': (i, 448, 1, 1), 'branch3x3dbl_2': (448, 384, 3, 3),
          'branch3x3dbl_3a': (384, 384, 1, 3), 'branch3x3dbl_3b': (384, 384, 3, 1),
          'branch_pool': (i, 192, 1, 1)}


TORCHVISION_LAYERS = {
    'Conv2d_1a_3x3': (3, 32, 3, 3), 'Conv2d_2a_3x3': (32, 32, 3, 3),
    'Conv2d_2b_3x3': (32, 64, 3, 3), 'Conv2d_3b_1x1': (64, 80, 1, 1),
    'Conv2d_4a_3x3': (80, 192, 3, 3),
    'Mixed_5b': _a(192, 32), 'Mixed_5c': _a(256, 64), 'Mixed_5d': _a(288, 64),
    'Mixed_6a': {'branch3x3': (288, 384, 3, 3), 'branch3x3dbl_1': (288, 64, 1, 1),
                 'branch3x3dbl_2': (64, 96, 3, 3), 'branch3x3dbl_3': (96, 96, 3, 3)},
    'Mixed_6b': _c(768, 128), 'Mixed_6c': _c(768, 160), 'Mixed_6d': _c(768, 160),
    'Mixed_6e': _c(768, 192),
    'Mixed_7a': {'branch3x3_1': (768, 192, 1, 1), 'branch3x3_2': (192, 320, 3, 3),
                 'branch7x7x3_1': (768, 192, 1, 1), 'branch7x7x3_2': (192, 192, 1, 7),
                 'branch7x7x3_3': (192, 192, 7, 1), 'branch7x7x3_4': (192, 192, 3, 3)},
    'Mixed_7b': _e(1280), 'Mixed_7c': _e(2048),
}


def _torchvision_convs():
  for name, spec in TORCHVISION_LAYERS.items():
    if isinstance(spec, tuple):
      yield (name,), spec
    else:
      yield from (((name, branch), s) for branch, s in spec.items())


@pytest.fixture(scope='module')
def variables():
  return inception.init_variables(seed=0)


def test_layers_match_torchvision(variables):
  convs = dict(_torchvision_convs())
  params, stats = variables['params'], variables['batch_stats']
  got_convs = {tuple(k.key for k in path[:-2])
               for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]
               if path[-2].key == 'conv'}
  assert got_convs == set(convs) and len(convs) == 94
  for path, (cin, cout, kh, kw) in convs.items():
    node, node_stats = params, stats
    for key in path:
      node, node_stats = node[key], node_stats[key]
    assert node['conv']['kernel'].shape == (kh, kw, cin, cout)  # OIHW -> HWIO.
    for leaf in (node['bn']['scale'], node['bn']['bias'], node_stats['bn']['mean'],
                 node_stats['bn']['var']):
      assert leaf.shape == (cout,)
  # Conv weights + BN scale, bias, mean and var: pytorch-fid's state dict less fc.
  expected = sum(i * o * h * w + 4 * o for i, o, h, w in convs.values())
  assert inception.param_count(variables) == expected == 21_820_000


def _equations(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        if isinstance(sub, jax_core.ClosedJaxpr):
          yield from _equations(sub.jaxpr)
        elif isinstance(sub, jax_core.Jaxpr):
          yield from _equations(sub)


def test_pools_are_pytorch_fids():
  """Where the pools sit, by the channels they see: stride-2 max pools in the
  stem, Mixed_6a and 7a; padded 3x3 average pools in 5b-5d, 6b-6e and 7b; a
  padded stride-1 max pool in Mixed_7c (FIDInceptionE_2)."""
  abstract = jax.eval_shape(inception.init_variables)
  jaxpr = jax.make_jaxpr(inception.MODEL.apply)(
      abstract, jax.ShapeDtypeStruct((1, 80, 80, 3), jnp.float32)).jaxpr
  pools = collections.Counter()
  for eqn in _equations(jaxpr):
    if not eqn.primitive.name.startswith('reduce_window'):
      continue
    channels = eqn.invars[0].aval.shape[-1]
    if channels > 1:  # Not the counts of unpadded cells that average pools divide by.
      padded = eqn.params['padding'][1] == (1, 1)
      pools[(eqn.primitive.name, eqn.params['window_strides'][1], padded, channels)] += 1
  max_pool, avg_pool = 'reduce_window_max', 'reduce_window_sum'
  assert pools == collections.Counter(
      {(max_pool, 2, False, c): 1 for c in (64, 192, 288, 768)} |
      {(max_pool, 1, True, 2048): 1} |
      {(avg_pool, 1, True, c): 1 for c in (192, 256, 288, 1280)} |
      {(avg_pool, 1, True, 768): 4})


def test_features_shape_finite_and_varied(variables):
  images = np.random.default_rng(9).random((2, 64, 64, 3)).astype(np.float32)
  feats = np.asarray(inception.features(variables, images))
  assert feats.shape == (2, inception.FEATURE_DIM) and feats.dtype == np.float32
  assert np.isfinite(feats).all()
  assert feats.std(axis=1).min() > 0  # Not constant across channels...
  assert np.abs(feats[0] - feats[1]).max() > 1e-3  # ...nor across images.
