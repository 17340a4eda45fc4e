"""Generators and discriminators of the official CycleGAN, as Flax linen modules.

Layouts, parameter counts and initialisation follow
junyanz/pytorch-CycleGAN-and-pix2pix `models/networks.py`. Images are NHWC.
Architectures only: every network takes its convolution as a module field
(`conv`, as flax/examples/imagenet injects it), chosen once per platform by
`platform_conv` in the create_* functions; the backend-specific forms are in
ops/.
"""

import functools
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cyclegan_jax.ops import blur
from cyclegan_jax.ops import subpixel
from cyclegan_jax.ops import xla_cpu_conv

ModuleDef = Any

# Official `init_weights(init_type='normal', init_gain=0.02)`: conv weights
# N(0, 0.02), biases 0.
_kernel_init = nn.initializers.normal(stddev=0.02)
# init_type='xavier' (CUT's default): xavier_normal_(gain=0.02), i.e.
# N(0, 0.02^2 * 2 / (fan_in + fan_out)) with fans counting kernel taps, as
# PyTorch's; biases 0.
_xavier_init = nn.initializers.variance_scaling(0.02**2, 'fan_avg', 'normal')
INITS = {'normal': _kernel_init, 'xavier': _xavier_init}


def kernel_init(model_config):
  name = model_config.init
  if name not in INITS:
    raise ValueError(f'config.model.init={name!r}: expected one of {", ".join(INITS)}')
  return name


# nn.Conv computing with ops.xla_cpu_conv.cpu_conv: one object, so that
# networks built twice are equal (jit's cache keys on them).
CPU_CONV = functools.partial(nn.Conv, conv_general_dilated=xla_cpu_conv.cpu_conv)


def platform_conv() -> ModuleDef:
  """The convolution module of this platform's networks: on XLA:CPU some
  convolutions and their gradients are much faster in other forms
  (ops.xla_cpu_conv, measured there only); other backends get XLA's own."""
  return CPU_CONV if jax.default_backend() == 'cpu' else nn.Conv


def conv_layer(conv: ModuleDef, features, kernel, stride=1, padding=0, use_bias=True,
               dtype=jnp.float32, init='normal', name=None):
  p = ((padding, padding), (padding, padding))
  return conv(features, (kernel, kernel), strides=(stride, stride), padding=p,
              use_bias=use_bias, kernel_init=INITS[init], dtype=dtype, name=name)


class ConvTranspose(nn.Module):
  """PyTorch's ConvTranspose2d(kernel, stride=2, padding, output_padding).

  Its parameters are those of Flax's `nn.ConvTranspose(transpose_kernel=True)`
  (same names, shapes and init) in both of its forms, so checkpoints, the
  PyTorch import and ONNX export are the same whichever computes it:
  `subpixel` (XLA:CPU, CPU_CONV_TRANSPOSE): one stride-1 convolution and
  depth-to-space, about 20x faster there than XLA's input-dilated form; or
  XLA's own transposed convolution (other backends), which does fewer
  multiply-adds: the sub-pixel kernel carries zero taps (per block of 2x2
  output pixels, 16 taps instead of 9 for k3, 36 instead of 16 for k4;
  docs/performance.md).
  """
  features: int
  kernel_size: int
  padding: int
  output_padding: int
  use_bias: bool = True
  dtype: Any = jnp.float32
  init_type: str = 'normal'
  subpixel: bool = False
  precision: Any = None  # Of float32 arithmetic on accelerators (PRECISIONS).

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param('kernel', INITS[self.init_type], (k, k, self.features, x.shape[-1]))
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if self.subpixel:
      y = subpixel.subpixel_conv_transpose(x, kernel, self.padding, self.output_padding,
                                           precision=self.precision)
    else:  # As nn.ConvTranspose(transpose_kernel=True) computes it.
      low = k - 1 - self.padding
      y = jax.lax.conv_transpose(x, kernel, (2, 2), ((low, low + self.output_padding),) * 2,
                                 dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                 transpose_kernel=True, precision=self.precision)
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros, (self.features,))
      y = y + bias.astype(self.dtype)
    return y


# The sub-pixel form, one object for the same reason as CPU_CONV.
CPU_CONV_TRANSPOSE = functools.partial(ConvTranspose, subpixel=True)


def platform_conv_transpose() -> ModuleDef:
  """The transposed convolution of this platform's generators: the sub-pixel
  form on XLA:CPU (measured faster there only), XLA's own elsewhere."""
  return CPU_CONV_TRANSPOSE if jax.default_backend() == 'cpu' else ConvTranspose


# config.model.precision: the precision of float32 convolutions and matmuls.
# 'default' is each platform's fast path: float32 on CPUs, TF32 on NVIDIA
# GPUs from Ampere on, one bfloat16 pass on TPUs; 'highest' is float32
# arithmetic everywhere (slower on accelerators). docs/reproducibility.md.
PRECISIONS = {'default': None, 'highest': jax.lax.Precision.HIGHEST}


def precision(model_config):
  """The lax precision config.model.precision names (None: the default)."""
  name = model_config.precision
  if name not in PRECISIONS:
    raise ValueError(f'config.model.precision={name!r}: expected one of '
                     f'{", ".join(PRECISIONS)}')
  return PRECISIONS[name]


@functools.cache
def with_precision(module: ModuleDef, lax_precision) -> ModuleDef:
  """`module` (a convolution class) computing at `lax_precision`: itself for
  the default, else one object per pair, so that networks built twice are
  equal (jit's cache keys on them)."""
  return module if lax_precision is None else functools.partial(module, precision=lax_precision)


def _conv_transpose(conv_transpose: ModuleDef, features, kernel, padding, output_padding,
                    use_bias=True, dtype=jnp.float32, init='normal'):
  return conv_transpose(features, kernel, padding, output_padding, use_bias=use_bias,
                        dtype=dtype, init_type=init)


def reflect_pad(x, pad):
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='reflect')


class InstanceNorm(nn.InstanceNorm):
  """nn.InstanceNorm, unchanged, under a class of its own: while jax2onnx
  converts a program it replaces nn.InstanceNorm.__call__, a call Flax's
  method interceptors (tiling's whole-image statistics) then no longer see;
  they still see this subclass's. Same name, so the same module paths."""

  def __call__(self, x, *, mask=None):
    return super().__call__(x, mask=mask)


def _instance_norm(dtype):
  # InstanceNorm2d(affine=False, track_running_stats=False), eps 1e-5. Flax
  # reduces the statistics in float32 even when activations are bfloat16.
  return InstanceNorm(epsilon=1e-5, use_bias=False, use_scale=False, dtype=dtype)


class BatchNorm(nn.Module):
  """BatchNorm2d(affine=True), eps 1e-5, normalising with the statistics of the
  batch it is given, at training and at test time alike.

  That is how the official code runs it: its test script calls `model.eval()`
  only with `--eval`, which pix2pix does not use, so the running averages are
  kept but never read. They are not kept here. Under data parallelism the
  statistics are each device's own, as on one GPU of the official code.
  """
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    # Official init: weight N(1, 0.02), bias 0.
    scale = self.param('scale', lambda key, shape: 1.0 + 0.02 * jax.random.normal(key, shape),
                       (features,))
    bias = self.param('bias', nn.initializers.zeros, (features,))
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=(0, 1, 2))
    var = jnp.var(x32, axis=(0, 1, 2))
    y = (x32 - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias
    return y.astype(self.dtype)


NORMS = ('instance', 'batch')


def norm_layer(norm: str, dtype):
  if norm == 'instance':
    return _instance_norm(dtype)
  if norm == 'batch':
    return BatchNorm(dtype)
  raise ValueError(f'config.model.norm={norm!r}: expected one of {", ".join(NORMS)}')


def uses_bias(norm: str) -> bool:
  # Official `use_bias = norm_layer == InstanceNorm2d`: a conv before a batch
  # norm needs no bias (the norm's own bias does its job).
  return norm == 'instance'


def run_layers(layers: list, x, nce_layers: tuple[int, ...] = ()):
  """x through `layers` in turn; with `nce_layers` (increasing indices), the
  outputs of those layers instead, the layers after the last one not run
  (CUT's `encode_only`)."""
  features = []
  for k, layer in enumerate(layers):
    x = layer(x)
    if k in nce_layers:
      features.append(x)
      if k == nce_layers[-1]:
        return features
  if nce_layers:
    raise ValueError(f'nce_layers={tuple(nce_layers)}: this generator has layers 0 to '
                     f'{len(layers) - 1}')
  return x


class ResnetBlock(nn.Module):
  features: int
  dropout: bool = False
  norm: str = 'instance'
  dropout_at_test: bool = False
  dtype: Any = jnp.float32
  init_type: str = 'normal'
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x, train: bool = True):
    conv = functools.partial(conv_layer, self.conv, self.features, 3, use_bias=uses_bias(self.norm),
                             dtype=self.dtype, init=self.init_type)
    y = nn.relu(norm_layer(self.norm, self.dtype)(conv()(reflect_pad(x, 1))))
    if self.dropout:
      y = nn.Dropout(0.5, deterministic=not (train or self.dropout_at_test))(y)
    y = norm_layer(self.norm, self.dtype)(conv()(reflect_pad(y, 1)))
    return x + y


class ResnetGenerator(nn.Module):
  """c7s1-ngf, d2ngf, d4ngf, n_blocks x R4ngf, u2ngf, ungf, c7s1-3, tanh.

  With `antialias` (CUT's default) each downsampling is a stride-1 conv, norm,
  ReLU, then `blur_downsample`; with `antialias_up` each upsampling is
  `blur_upsample`, then a stride-1 conv, norm, ReLU. The parameter count is
  the same either way.
  """
  n_blocks: int = 9
  ngf: int = 64
  output_nc: int = 3
  dropout: bool = False
  norm: str = 'instance'
  dropout_at_test: bool = False  # Dropout also at test time (pix2pix, as in its paper).
  dtype: Any = jnp.float32
  # Recompute each residual block in the backward pass (jax.checkpoint)
  # instead of keeping its activations: less memory, one more forward per block.
  remat: bool = False
  antialias: bool = False
  antialias_up: bool = False
  init_type: str = 'normal'
  conv: ModuleDef = nn.Conv
  conv_transpose: ModuleDef = ConvTranspose

  def layers(self, train: bool) -> list:
    """The official nn.Sequential, one callable per entry, so that entry k
    here is entry k there (CUT's `nce_layers` count them)."""
    bias, dtype = uses_bias(self.norm), self.dtype
    # static_argnums counts the module as 0: `train` (2) is a Python bool.
    block = nn.remat(ResnetBlock, static_argnums=(2,)) if self.remat else ResnetBlock
    norm = lambda: norm_layer(self.norm, dtype)
    conv = functools.partial(conv_layer, self.conv, use_bias=bias, dtype=dtype, init=self.init_type)
    layers = [lambda x: reflect_pad(x.astype(dtype), 3), conv(self.ngf, 7), norm(), nn.relu]
    for mult in (2, 4):  # Two downsamplings by 2.
      if self.antialias:
        layers += [conv(self.ngf * mult, 3, padding=1), norm(), nn.relu, blur.blur_downsample]
      else:
        layers += [conv(self.ngf * mult, 3, stride=2, padding=1), norm(), nn.relu]
    for i in range(self.n_blocks):  # Named as without remat: the same parameter tree.
      layers.append(functools.partial(
          lambda x, module: module(x, train),
          module=block(self.ngf * 4, self.dropout, self.norm, self.dropout_at_test, dtype,
                       self.init_type, self.conv, name=f'ResnetBlock_{i}')))
    for mult in (2, 1):  # Two upsamplings by 2.
      if self.antialias_up:
        layers += [blur.blur_upsample, conv(self.ngf * mult, 3, padding=1), norm(), nn.relu]
      else:  # k3 p1 output_padding 1.
        layers += [_conv_transpose(self.conv_transpose, self.ngf * mult, 3, padding=1,
                                   output_padding=1, use_bias=bias, dtype=dtype,
                                   init=self.init_type), norm(), nn.relu]
    layers += [lambda x: reflect_pad(x, 3),
               conv_layer(self.conv, self.output_nc, 7, dtype=dtype, init=self.init_type),
               lambda x: jnp.tanh(x.astype(jnp.float32))]
    return layers

  @nn.compact
  def __call__(self, x, train: bool = True, nce_layers: tuple[int, ...] = ()):
    """G(x); with `nce_layers` (increasing indices of `layers`), the outputs
    of those layers instead, the layers after the last one not run (CUT's
    `encode_only`)."""
    return run_layers(self.layers(train), x, nce_layers)


class UnetGenerator(nn.Module):
  """The official recursive U-Net, unrolled: level 0 is the outermost block.

  Level i maps `inner[i-1]` channels to `inner[i]` on the way down and back on
  the way up, its input concatenated to its output (skip connection).
  """
  num_downs: int = 8
  ngf: int = 64
  output_nc: int = 3
  dropout: bool = False
  norm: str = 'instance'
  dropout_at_test: bool = False  # Dropout also at test time (pix2pix, as in its paper).
  dtype: Any = jnp.float32
  # Recompute each level's down and up step in the backward pass
  # (jax.checkpoint) and keep only their outputs, which the skips need anyway.
  remat: bool = False
  conv: ModuleDef = nn.Conv
  conv_transpose: ModuleDef = ConvTranspose

  @nn.compact
  def __call__(self, x, train: bool = True):
    n, ngf, bias = self.num_downs, self.ngf, uses_bias(self.norm)
    inner = [ngf, ngf * 2, ngf * 4] + [ngf * 8] * (n - 3)
    down = functools.partial(conv_layer, self.conv, kernel=4, stride=2, padding=1, use_bias=bias,
                             dtype=self.dtype)
    up = functools.partial(_conv_transpose, self.conv_transpose, kernel=4, padding=1,
                           output_padding=0, dtype=self.dtype)
    norm = lambda: norm_layer(self.norm, self.dtype)
    # nn.remat of a function of (module, x): its layers keep the names they have
    # without remat (Conv_0, ...), so the parameter tree is the same.
    checkpointed = nn.remat if self.remat else lambda step: step

    def down_step(i):
      def step(module, x):
        del module  # The layers below attach to it through Flax's module context.
        if i > 0:  # negative_slope by name: jax2onnx (export.py) reads only that form.
          x = nn.leaky_relu(x, negative_slope=0.2)
        x = down(inner[i])(x)
        if 0 < i < n - 1:  # Neither the outermost nor the innermost level is normalised.
          x = norm()(x)
        return x
      return checkpointed(step)

    def up_step(i):
      def step(module, x, skip):
        del module
        if skip is not None:
          x = jnp.concatenate([skip, x], axis=-1)
        # The outermost up-convolution keeps its bias whatever the norm.
        x = up(inner[i - 1] if i > 0 else self.output_nc, use_bias=bias or i == 0)(nn.relu(x))
        if i > 0:
          x = norm()(x)
        if self.dropout and 4 <= i <= n - 2:  # The extra ngf*8 blocks carry dropout.
          x = nn.Dropout(0.5, deterministic=not (train or self.dropout_at_test))(x)
        return x
      return checkpointed(step)

    x = x.astype(self.dtype)
    skips = []
    for i in range(n):
      x = down_step(i)(self, x)
      skips.append(x)
    for i in reversed(range(n)):
      x = up_step(i)(self, x, skips[i] if i < n - 1 else None)
    return jnp.tanh(x.astype(jnp.float32))


class NLayerDiscriminator(nn.Module):
  """PatchGAN: C(ndf) without norm, then n_layers-1 stride-2 and one stride-1
  conv with instance norm, then a conv to one channel; k4 p1, LeakyReLU 0.2.
  With n_layers=3 this is the 70x70 PatchGAN (`basic`)."""
  ndf: int = 64
  n_layers: int = 3
  norm: str = 'instance'
  dtype: Any = jnp.float32
  # CUT's default: each stride-2 conv becomes a stride-1 conv, its norm and
  # LeakyReLU, then `blur_downsample` (256 px in: a 30x30 map either way).
  antialias: bool = False
  init_type: str = 'normal'
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x):
    x = x.astype(self.dtype)
    for n in range(self.n_layers + 1):
      strided = n < self.n_layers
      stride = 1 if self.antialias or not strided else 2
      x = conv_layer(self.conv, self.ndf * min(2**n, 8), 4, stride=stride, padding=1,
                use_bias=n == 0 or uses_bias(self.norm), dtype=self.dtype, init=self.init_type)(x)
      if n > 0:  # The first layer has no norm.
        x = norm_layer(self.norm, self.dtype)(x)
      x = nn.leaky_relu(x, negative_slope=0.2)
      if self.antialias and strided:
        x = blur.blur_downsample(x)
    x = conv_layer(self.conv, 1, 4, padding=1, dtype=self.dtype, init=self.init_type)(x)
    return x.astype(jnp.float32)


class PixelDiscriminator(nn.Module):
  """1x1 PatchGAN (`pixel`)."""
  ndf: int = 64
  norm: str = 'instance'
  dtype: Any = jnp.float32
  init_type: str = 'normal'
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x):
    bias = uses_bias(self.norm)
    conv = functools.partial(conv_layer, self.conv, dtype=self.dtype, init=self.init_type)
    x = x.astype(self.dtype)
    x = nn.leaky_relu(conv(self.ndf, 1)(x), negative_slope=0.2)
    x = norm_layer(self.norm, self.dtype)(conv(self.ndf * 2, 1, use_bias=bias)(x))
    x = conv(1, 1, use_bias=bias)(nn.leaky_relu(x, negative_slope=0.2))
    return x.astype(jnp.float32)


DTYPES = ('float32', 'bfloat16')


def compute_dtype(model_config) -> jnp.dtype:
  name = model_config.dtype
  if name not in DTYPES:
    raise ValueError(f'config.model.dtype={name!r}: expected one of {", ".join(DTYPES)}')
  return jnp.dtype(name)


GENERATORS = ('resnet_9blocks', 'resnet_6blocks', 'resnet_<N>blocks', 'unet_256', 'unet_128',
              'unet_<2^N>')
DISCRIMINATORS = ('basic', 'n_layers', 'pixel')


def create_generator(model_config, output_nc: int | None = None) -> nn.Module:
  """A generator to `output_nc` channels (default config.model.output_nc);
  its input channels are those of what it is first applied to."""
  name = model_config.generator
  common = dict(ngf=model_config.ngf, dropout=model_config.dropout,
                output_nc=output_nc or model_config.output_nc, norm=_norm_name(model_config),
                dropout_at_test=model_config.dropout_at_test,
                dtype=compute_dtype(model_config), remat=model_config.remat,
                conv=with_precision(platform_conv(), precision(model_config)),
                conv_transpose=with_precision(platform_conv_transpose(),
                                              precision(model_config)))
  resnet = re.fullmatch(r'resnet_(\d+)blocks', name)
  if resnet:
    return ResnetGenerator(n_blocks=int(resnet.group(1)), antialias=model_config.antialias,
                           antialias_up=model_config.antialias_up,
                           init_type=kernel_init(model_config), **common)
  unet = re.fullmatch(r'unet_(\d+)', name)
  # unet_256 has 8 downsamplings (256 = 2^8), unet_128 7; unet_32 (5) is for tests.
  size = int(unet.group(1)) if unet else 0
  if unet and size >= 32 and size & (size - 1) == 0:
    if model_config.antialias or model_config.antialias_up:
      raise ValueError(f'config.model.antialias: expected False for generator={name!r} '
                       '(antialiased sampling is for resnet generators, as in CUT)')
    if kernel_init(model_config) != 'normal':
      raise ValueError(f"config.model.init={model_config.init!r}: expected 'normal' for "
                       f'generator={name!r}')
    return UnetGenerator(num_downs=size.bit_length() - 1, **common)
  raise ValueError(f'config.model.generator={name!r}: expected one of {", ".join(GENERATORS)}')


def create_discriminator(model_config) -> nn.Module:
  name = model_config.discriminator
  common = dict(ndf=model_config.ndf, norm=_norm_name(model_config),
                dtype=compute_dtype(model_config), init_type=kernel_init(model_config),
                conv=with_precision(platform_conv(), precision(model_config)))
  if name == 'basic':
    return NLayerDiscriminator(n_layers=3, antialias=model_config.antialias, **common)
  if name == 'n_layers':
    return NLayerDiscriminator(n_layers=model_config.n_layers_d,
                               antialias=model_config.antialias, **common)
  if name == 'pixel':
    return PixelDiscriminator(**common)
  raise ValueError(
      f'config.model.discriminator={name!r}: expected one of {", ".join(DISCRIMINATORS)}')


class PatchSampleMLP(nn.Module):
  """CUT's F (`PatchSampleF` with `use_mlp`): for each NCE layer its own
  Linear(C, nc), ReLU, Linear(nc, nc) (xavier_normal gain 0.02, bias 0) on
  the features of the sampled patches, then L2-normalised. The reference
  builds it lazily at the first batch; here it is built from the features'
  shapes before training (families/cut.py)."""
  nc: int = 256
  precision: Any = None  # Of float32 arithmetic on accelerators (PRECISIONS).

  @nn.compact
  def __call__(self, features, patch_ids):
    """features: per layer (B, H, W, C); patch_ids: per layer the flat (h * W
    + w) indices of its patches, the same for every image. Returns per layer
    (B * len(ids), nc) rows, image by image, each of unit length."""
    out = []
    for i, (feature, ids) in enumerate(zip(features, patch_ids)):
      b, h, w, c = feature.shape
      x = feature.reshape(b, h * w, c)[:, ids].reshape(-1, c).astype(jnp.float32)
      dense = functools.partial(nn.Dense, self.nc, kernel_init=_xavier_init,
                                precision=self.precision)
      x = dense(name=f'mlp_{i}_1')(nn.relu(dense(name=f'mlp_{i}_0')(x)))
      # `Normalize(2)`: x / (||x|| + 1e-7).
      out.append(x / (jnp.sqrt(jnp.sum(x**2, axis=1, keepdims=True)) + 1e-7))
    return out


def _norm_name(model_config) -> str:
  norm = model_config.norm
  if norm not in NORMS:
    raise ValueError(f'config.model.norm={norm!r}: expected one of {", ".join(NORMS)}')
  return norm


def generator_multiple(generator: nn.Module) -> int:
  """Height and width a generator's input must be a multiple of."""
  if isinstance(generator, UnetGenerator):
    return 2**generator.num_downs
  return 4


def receptive_radius(generator: nn.Module) -> int:
  """How far, in input pixels, an output pixel of `generator` can depend on
  the input when its normalisation statistics are held fixed: pixels further
  away from it, in rows or columns, cannot change it. Tiled translation
  (tiling.py) overlaps its tiles by this much, so that each tile's centre is
  the untiled translation's.

  Counted layer by layer at the spacing J (input pixels per feature pixel)
  of the layer's input: a k3 convolution reaches J further, a k7 one 3J; a
  stride-2 convolution (k3 p1 or k4 p1), a blur and a transposed convolution
  (k3 or k4, stride 2) reach at most J.
  """
  if hasattr(generator, 'receptive_radius'):  # A generator that counts its own (sb_models).
    return generator.receptive_radius()
  if isinstance(generator, UnetGenerator):
    # num_downs k4 s2 convolutions at J = 1, 2, ..., then as many transposed
    # ones at J = 2^n, ..., 2 (the skips reach less far than this path).
    n = generator.num_downs
    return (2**n - 1) + (2**(n + 1) - 2)
  if isinstance(generator, ResnetGenerator):
    down = 2 * (1 + 2) if generator.antialias else 1 + 2  # conv (+ blur) at J = 1, 2.
    up = (4 + 2) + (2 + 1) if generator.antialias_up else 4 + 2  # At J = 4, 2 (+ conv after).
    return 3 + down + 2 * 4 * generator.n_blocks + up + 3  # c7s1 .. blocks .. c7s1.
  raise ValueError(f'{type(generator).__name__}: its receptive field is not known; tiled '
                   'translation needs it (models.receptive_radius)')


def has_dropout_layers(generator: nn.Module) -> bool:
  """Whether `generator` applies dropout anywhere: UnetGenerator puts it on
  levels 4 .. num_downs - 2 (the official extra ngf*8 blocks), so none below
  unet_64 has any."""
  if isinstance(generator, UnetGenerator):
    return generator.dropout and generator.num_downs >= 6
  return generator.dropout


def count_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))
