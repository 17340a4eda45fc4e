"""The FID Inception-v3 of pytorch-fid as a Flax linen module, NHWC, up to pool3.

pytorch-fid (`fid_inception_v3`, weights `pt_inception-2015-12-05`) is
torchvision's Inception3 with 1008 classes, no aux head, and patched blocks
that follow the TensorFlow graph the FID was defined on: the 3x3 average pools
of Mixed_5b-5d, 6b-6e and 7b ignore padding (`count_include_pad=False`) and
Mixed_7c pools with a max instead. Features are the 2048-d global average of
Mixed_7c; the fc layer is not built.

Module names are torchvision's (`Mixed_5b/branch1x1/conv`, `.../bn`) so that
pytorch-fid's `Mixed_5b.branch1x1.conv.weight` (OIHW, to HWIO here) and
`.bn.weight/.bias/.running_mean/.running_var` (params `scale`/`bias`,
batch_stats `mean`/`var`) map one to one.

Architecture checked against torchvision/models/inception.py and
pytorch-fid's src/pytorch_fid/inception.py: 94 BasicConv2d (conv without bias
+ BatchNorm eps 1e-3 + ReLU) holding 21,751,136 conv weights and 17,216 BN
channels, so 21,751,136 + 4 x 17,216 = 21,820,000 values here and in
pytorch-fid's state dict without fc (whose fc adds 2048 x 1008 + 1008 =
2,065,392). The TorchScript copy's "376 tensors, 21.8 M values" fits 94 x
(weight, beta, mean, var): 21,751,136 + 3 x 17,216 = 21,802,784, if, as
its names suggest, its BN has no scale (a converter then sets scale 1).
tests/test_fid.py recounts the shapes from torchvision's layer list.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

INPUT_SIZE = 299
# The field's two preprocessings (FIDInceptionV3): pytorch-fid's and clean-fid's.
FID_MODES = ('legacy', 'clean')
FEATURE_DIM = 2048


def _pair(v):
  return (v, v) if isinstance(v, int) else tuple(v)


class BasicConv2d(nn.Module):
  """torchvision's BasicConv2d in inference mode: BN uses the stored statistics."""
  features: int
  kernel: Any = 1
  stride: int = 1
  padding: Any = 0

  @nn.compact
  def __call__(self, x):
    ph, pw = _pair(self.padding)
    x = nn.Conv(self.features, _pair(self.kernel), strides=_pair(self.stride),
                padding=((ph, ph), (pw, pw)), use_bias=False,
                kernel_init=nn.initializers.he_normal(), name='conv')(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name='bn')(x)
    return nn.relu(x)


def _avg_pool_3x3(x):
  # FID patch: TensorFlow's average pool does not count the zero padding.
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_3x3_s2(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')


class InceptionA(nn.Module):  # Mixed_5b, 5c, 5d (FIDInceptionA).
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(64, name='branch1x1')(x)
    b5 = BasicConv2d(48, name='branch5x5_1')(x)
    b5 = BasicConv2d(64, 5, padding=2, name='branch5x5_2')(b5)
    b3 = BasicConv2d(64, name='branch3x3dbl_1')(x)
    b3 = BasicConv2d(96, 3, padding=1, name='branch3x3dbl_2')(b3)
    b3 = BasicConv2d(96, 3, padding=1, name='branch3x3dbl_3')(b3)
    bp = BasicConv2d(self.pool_features, name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):  # Mixed_6a: 35x35 -> 17x17.
  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(384, 3, stride=2, name='branch3x3')(x)
    bd = BasicConv2d(64, name='branch3x3dbl_1')(x)
    bd = BasicConv2d(96, 3, padding=1, name='branch3x3dbl_2')(bd)
    bd = BasicConv2d(96, 3, stride=2, name='branch3x3dbl_3')(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):  # Mixed_6b-6e (FIDInceptionC): factorised 7x7.
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
    b1 = BasicConv2d(192, name='branch1x1')(x)
    b7 = BasicConv2d(c7, name='branch7x7_1')(x)
    b7 = BasicConv2d(c7, **row, name='branch7x7_2')(b7)
    b7 = BasicConv2d(192, **col, name='branch7x7_3')(b7)
    bd = BasicConv2d(c7, name='branch7x7dbl_1')(x)
    bd = BasicConv2d(c7, **col, name='branch7x7dbl_2')(bd)
    bd = BasicConv2d(c7, **row, name='branch7x7dbl_3')(bd)
    bd = BasicConv2d(c7, **col, name='branch7x7dbl_4')(bd)
    bd = BasicConv2d(192, **row, name='branch7x7dbl_5')(bd)
    bp = BasicConv2d(192, name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):  # Mixed_7a: 17x17 -> 8x8.
  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(192, name='branch3x3_1')(x)
    b3 = BasicConv2d(320, 3, stride=2, name='branch3x3_2')(b3)
    b7 = BasicConv2d(192, name='branch7x7x3_1')(x)
    b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
    b7 = BasicConv2d(192, 3, stride=2, name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b (FIDInceptionE_1, average pool without padding) and Mixed_7c
  (FIDInceptionE_2, max pool: an oddity of the TF graph kept for FID)."""
  max_pool: bool = False

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(320, name='branch1x1')(x)
    b3 = BasicConv2d(384, name='branch3x3_1')(x)
    b3 = jnp.concatenate([
        BasicConv2d(384, (1, 3), padding=(0, 1), name='branch3x3_2a')(b3),
        BasicConv2d(384, (3, 1), padding=(1, 0), name='branch3x3_2b')(b3)], axis=-1)
    bd = BasicConv2d(448, name='branch3x3dbl_1')(x)
    bd = BasicConv2d(384, 3, padding=1, name='branch3x3dbl_2')(bd)
    bd = jnp.concatenate([
        BasicConv2d(384, (1, 3), padding=(0, 1), name='branch3x3dbl_3a')(bd),
        BasicConv2d(384, (3, 1), padding=(1, 0), name='branch3x3dbl_3b')(bd)], axis=-1)
    if self.max_pool:
      pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    else:
      pooled = _avg_pool_3x3(x)
    bp = BasicConv2d(192, name='branch_pool')(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def _source_index(in_size, out_size):
  """PyTorch's bilinear source taps for align_corners=False, per output pixel.

  Half-pixel centres, src = (dst + 0.5) * in / out - 0.5, clamped below at 0;
  the upper neighbour is clamped to the last pixel. Computed in float32 like
  PyTorch's kernels. No antialias: a downsampling reads only 2 taps per axis.
  """
  scale = np.float32(in_size) / np.float32(out_size)
  src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
  src = np.maximum(src, np.float32(0))
  lo = np.minimum(src.astype(np.int64), in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  return lo, hi, (src - lo).astype(np.float32)


def resize_bilinear(images, size):
  """`F.interpolate(mode='bilinear', align_corners=False)` on NHWC images.

  jax.image.resize antialiases when downsampling, which PyTorch's bilinear
  does not, so the two taps are gathered and interpolated explicitly.
  """
  height, width = _pair(size)
  for axis, out_size in ((1, height), (2, width)):
    lo, hi, w = _source_index(images.shape[axis], out_size)
    w = w.reshape((-1,) + (1,) * (images.ndim - 1 - axis))  # Broadcast over later axes.
    a, b = jnp.take(images, lo, axis=axis), jnp.take(images, hi, axis=axis)
    images = a + (b - a) * w
  return images


def resize_clean(images_uint8: np.ndarray) -> np.ndarray:
  """clean-fid's resizer ("clean" mode): each channel of each uint8 image as a
  float32 PIL image, bicubic (antialiased) to 299x299, clipped to [0, 255].
  NHWC uint8 (3 channels) -> NHWC float32 299x299 in [0, 255]."""
  images_uint8 = np.asarray(images_uint8)
  if images_uint8.dtype != np.uint8 or images_uint8.ndim != 4 or images_uint8.shape[-1] != 3:
    raise ValueError(f'resize_clean: expected uint8 RGB images (N, H, W, 3), got '
                     f'{images_uint8.dtype} {images_uint8.shape}')
  out = np.empty((len(images_uint8), INPUT_SIZE, INPUT_SIZE, 3), np.float32)
  for n, image in enumerate(images_uint8):
    for c in range(3):
      channel = Image.fromarray(image[:, :, c].astype(np.float32), mode='F')
      channel = channel.resize((INPUT_SIZE, INPUT_SIZE), resample=Image.Resampling.BICUBIC)
      out[n, :, :, c] = np.clip(np.asarray(channel), 0, 255)
  return out


class FIDInceptionV3(nn.Module):
  """Images -> (N, 2048) pool3 features (float32), NHWC.

  legacy (pytorch-fid): images in [0, 1] of any size, resized here (bilinear,
  no antialias) and scaled to [-1, 1]. clean (clean-fid): images already
  299x299 (resize_clean) in [0, 255], scaled to [-1, 1] as clean-fid's
  TorchScript Inception does, by (x - 128) / 128. Same variables either way.
  """
  clean: bool = False

  @nn.compact
  def __call__(self, images):
    x = jnp.asarray(images, jnp.float32)
    if self.clean:
      x = (x - 128.0) / 128.0
    else:
      x = 2.0 * resize_bilinear(x, INPUT_SIZE) - 1.0  # The TF graph's input range.
    x = BasicConv2d(32, 3, stride=2, name='Conv2d_1a_3x3')(x)  # 149x149
    x = BasicConv2d(32, 3, name='Conv2d_2a_3x3')(x)  # 147x147
    x = BasicConv2d(64, 3, padding=1, name='Conv2d_2b_3x3')(x)
    x = _max_pool_3x3_s2(x)  # 73x73
    x = BasicConv2d(80, name='Conv2d_3b_1x1')(x)
    x = BasicConv2d(192, 3, name='Conv2d_4a_3x3')(x)  # 71x71
    x = _max_pool_3x3_s2(x)  # 35x35
    x = InceptionA(32, name='Mixed_5b')(x)  # 256 channels
    x = InceptionA(64, name='Mixed_5c')(x)  # 288
    x = InceptionA(64, name='Mixed_5d')(x)  # 288
    x = InceptionB(name='Mixed_6a')(x)  # 768 @ 17x17
    x = InceptionC(128, name='Mixed_6b')(x)
    x = InceptionC(160, name='Mixed_6c')(x)
    x = InceptionC(160, name='Mixed_6d')(x)
    x = InceptionC(192, name='Mixed_6e')(x)
    x = InceptionD(name='Mixed_7a')(x)  # 1280 @ 8x8
    x = InceptionE(name='Mixed_7b')(x)  # 2048
    x = InceptionE(max_pool=True, name='Mixed_7c')(x)
    return jnp.mean(x, axis=(1, 2))  # AdaptiveAvgPool2d(1): pool3.


MODEL = FIDInceptionV3()
CLEAN_MODEL = FIDInceptionV3(clean=True)


def init_variables(seed=0):
  """Random variables (params + batch_stats) for tests, without a forward pass.

  He-normal convs and identity BatchNorms (scale 1, bias 0, mean 0, var 1)
  keep ReLU activations at a steady scale through the ~20 convs of the
  deepest path; only shapes come from `init`, via eval_shape.
  """
  shapes = jax.eval_shape(MODEL.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3)))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      fan_in = np.prod(leaf.shape[:-1])
      return jnp.asarray(rng.normal(0, np.sqrt(2 / fan_in), leaf.shape), jnp.float32)
    value = 1.0 if name in ('scale', 'var') else 0.0
    return jnp.full(leaf.shape, value, jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def param_count(variables):
  """Values in params and batch_stats: what pytorch-fid's state dict holds
  (less fc and the scalar num_batches_tracked)."""
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables))


@jax.jit
def features(variables, images01):
  """(N, 2048) pool3 features of images in [0, 1] (pytorch-fid's
  preprocessing); jitted per input shape."""
  return MODEL.apply(variables, images01)


@jax.jit
def features_clean(variables, images299):
  """(N, 2048) pool3 features of resize_clean's 299x299 images in [0, 255]
  (clean-fid's preprocessing)."""
  return CLEAN_MODEL.apply(variables, images299)
