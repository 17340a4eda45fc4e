"""FID and KID statistics of Inception features, as the standard tools compute them.

Pure NumPy/SciPy in float64, so a score depends only on the features:
`frechet_distance` follows pytorch-fid's `calculate_frechet_distance` (also used
by clean-fid) and `kernel_inception_distance` the unbiased polynomial-kernel
MMD^2 of torch-fidelity's `kid` (clean-fid's `kernel_distance` is the same
estimator, mean only).
"""

import warnings

import numpy as np
import scipy
import scipy.linalg

# SciPy 1.16 rewrote sqrtm: `disp` is deprecated (a DeprecationWarning when
# passed, removal in 1.18) and a singular input, which is the rule when there
# are fewer samples than feature dimensions, warns instead of printing.
_SQRTM_HAS_DISP = tuple(int(p) for p in scipy.__version__.split('.')[:2]) < (1, 16)


def _check_features(features, name='features'):
  features = np.asarray(features, dtype=np.float64)
  if features.ndim != 2:
    raise ValueError(f'{name}: expected a 2-D array (num_samples, dim), got shape '
                     f'{features.shape}')
  if features.shape[0] < 2:
    raise ValueError(f'{name}: need at least 2 samples for a covariance, got '
                     f'{features.shape[0]}')
  return features


def _check_pair(features1, features2):
  f1 = _check_features(features1, 'features1')
  f2 = _check_features(features2, 'features2')
  if f1.shape[1] != f2.shape[1]:
    raise ValueError(f'feature dimensions differ: {f1.shape[1]} vs {f2.shape[1]}')
  return f1, f2


def feature_statistics(features):
  """Mean and covariance (np.cov, ddof=1) of (num_samples, dim) features."""
  features = _check_features(features)
  return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrtm(a):
  if _SQRTM_HAS_DISP:
    return scipy.linalg.sqrtm(a, disp=False)[0]  # (sqrt, error estimate), no print.
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', scipy.linalg.LinAlgWarning)
    return scipy.linalg.sqrtm(a)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
  """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)) between two Gaussians."""
  mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
  mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  d = mu1.shape[0]
  if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(f'statistics do not match: mu1 {mu1.shape}, sigma1 {sigma1.shape}, '
                     f'mu2 {mu2.shape}, sigma2 {sigma2.shape}')
  diff = mu1 - mu2
  covmean = _sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    # As pytorch-fid: a singular product gets a small ridge on both diagonals.
    offset = np.eye(d) * eps
    covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    # Round-off gives S1 S2 tiny negative eigenvalues; a large imaginary part
    # means the inputs are not covariance matrices.
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(f'sqrtm(sigma1 sigma2) has an imaginary component '
                       f'{np.max(np.abs(covmean.imag))}')
    covmean = covmean.real
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(features1, features2, eps=1e-6):
  f1, f2 = _check_pair(features1, features2)
  return frechet_distance(*feature_statistics(f1), *feature_statistics(f2), eps=eps)


def _polynomial_kernel(x, y):
  return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x, y):
  """Unbiased MMD^2 of two equal-size samples with the cubic polynomial kernel:
  off-diagonal means of k(x, x') and k(y, y') minus twice the mean of k(x, y)."""
  m = x.shape[0]
  k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
  within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
  return within - 2.0 * k_xy.sum() / (m * m)


def kernel_inception_distance(features1, features2, num_subsets=100, max_subset_size=1000,
                              seed=0):
  """(mean, std) of the unbiased MMD^2 over random subsets of size
  min(n1, n2, max_subset_size), each drawn without replacement from each set.

  std is over subsets (ddof=0, as torch-fidelity): it measures the subset
  sampling, not the uncertainty of the mean.
  """
  f1, f2 = _check_pair(features1, features2)
  m = min(f1.shape[0], f2.shape[0], max_subset_size)
  if m < 2:
    raise ValueError(f'max_subset_size={max_subset_size}: subsets need at least 2 samples')
  rng = np.random.default_rng(seed)
  mmds = np.array([
      mmd2_unbiased(f1[rng.choice(f1.shape[0], m, replace=False)],
                    f2[rng.choice(f2.shape[0], m, replace=False)])
      for _ in range(num_subsets)])
  return float(mmds.mean()), float(mmds.std())
