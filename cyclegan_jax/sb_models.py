"""The networks of UNSB (Kim et al., "Unpaired Image-to-Image Translation via
Neural Schrödinger Bridge", ICLR 2024), as Flax linen modules: the official
cyclomon/UNSB `models/ncsn_networks.py` layouts, parameter names in its order
and its initialisation (xavier_normal, gain 0.02, every Linear and Conv; all
biases 0). Images are NHWC; `t` is the integer time index 0..T-1, which the
official code embeds (not the time itself).

- `ConditionalResnetGenerator` (`ResnetGenerator_ncsn`): CUT's antialiased
  ResNet generator whose residual blocks also take the time embedding
  (sinusoidal of t -> MLP) and the noise z (PixelNorm -> MLP), z through an
  AdaIN-like scale and shift.
- `ConditionalPatchGAN` (`NLayerDiscriminator_ncsn`): CUT's antialiased
  PatchGAN with the time embedding added after each convolution; on two
  inputs it sees them concatenated (the entropy network E).

Time conditioning, `time_conditioning`:
- 'official': as the official `ResnetBlock_cond.forward` runs, which applies
  each of [pad, conv, norm] to the block's input instead of the running
  output and adds the time bias to a value it then overwrites: the block
  computes norm(x), so G's output does not depend on t, and the time MLP, the
  blocks' time layers and first convolutions get no gradient. The paper's
  numbers come from this network.
- 'fixed': the layers in sequence and the time bias added after the norm:
  norm(conv(pad(x))) + Dense(temb). (Added where the official code adds it,
  to the padded input, or anywhere before the instance norm, a bias constant
  over the image is subtracted again with the mean: t would still change
  nothing, measured at 3e-6.)
Both have the same parameters, so a checkpoint of either loads into both.
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cyclegan_jax import models
from cyclegan_jax.ops import blur

ModuleDef = Any
TIME_CONDITIONINGS = ('official', 'fixed')
_xavier = models.INITS['xavier']


def timestep_embedding(t, dim: int, max_positions: int = 10000) -> jax.Array:
  """The official `get_timestep_embedding`: (N,) indices -> (N, dim)
  [sin(t w_k), cos(t w_k)], w_k = max_positions^(-k / (dim/2 - 1))."""
  half = dim // 2
  scale = math.log(max_positions) / (half - 1)
  frequencies = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -scale)
  angles = jnp.asarray(t, jnp.float32)[:, None] * frequencies[None, :]
  embedding = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=1)
  return jnp.pad(embedding, ((0, 0), (0, dim % 2)))


def time_grid(num_timesteps: int) -> np.ndarray:
  """The official grid t_0 = 0 < t_1 = 0.5 < ... < t_T = 1 (float32, T + 1
  values): the harmonic sums 0, 1, 1 + 1/2, ... scaled onto [0.5, 1]. (T = 1:
  [0, 1]; the official formula divides 0 by 0 there, values no step reads.)"""
  if num_timesteps == 1:
    return np.array([0, 1], np.float32)
  steps = np.cumsum(np.array([0] + [1 / (i + 1) for i in range(num_timesteps - 1)]))
  steps = steps / steps[-1]
  return np.concatenate([np.zeros(1), 0.5 * steps[-1] + 0.5 * steps]).astype(np.float32)


def bridge_step(x, predicted, t, times, tau, noise) -> jax.Array:
  """x_t from x_{t-1} and G's prediction of x_1 from it (t >= 1): the
  Brownian bridge between them, (1 - a) x + a G + sqrt(s tau) noise, with
  a = d / (1 - t_{t-1}) and s = d (1 - a), d = t_t - t_{t-1}."""
  times = jnp.asarray(times)
  delta, remaining = times[t] - times[t - 1], times[-1] - times[t - 1]
  inter = delta / remaining
  scale = delta * (1 - inter)
  return (1 - inter) * x + inter * predicted + jnp.sqrt(scale * tau) * noise


def translation_draws(seed: int, nfe: int, image_shape, z_features: int) -> list:
  """[(z, noise)] of each of `nfe` translation steps for one (H, W, C) image:
  z (1, z_features) and the bridge's noise (1, H, W, C), which the first step
  does not use, drawn from PRNGKey(seed). What every_step uses, for a caller
  that runs the steps elsewhere (an exported step in ONNX Runtime)."""
  key, draws = jax.random.PRNGKey(seed), []
  for _ in range(nfe):
    key, noise_key, z_key = jax.random.split(key, 3)
    draws.append((jax.random.normal(z_key, (1, z_features)),
                  jax.random.normal(noise_key, (1, *image_shape))))
  return draws


def pixel_norm(z) -> jax.Array:
  """StyleGAN's PixelNorm: z / sqrt(mean(z^2) + 1e-8) over the features."""
  return z * jax.lax.rsqrt(jnp.mean(z**2, axis=1, keepdims=True) + 1e-8)


def _dense(features: int, name: str, precision=None) -> nn.Dense:
  return nn.Dense(features, kernel_init=_xavier, precision=precision, name=name)


def _mlp(x, widths, names, precision=None) -> jax.Array:
  """Linear, LeakyReLU(0.2) for each width."""
  for width, name in zip(widths, names):
    x = nn.leaky_relu(_dense(width, name, precision)(x), negative_slope=0.2)
  return x


class ConditionalResnetBlock(nn.Module):
  """`ResnetBlock_cond` with reflect padding: x + [conv, norm, (+ time),
  AdaIN(z), ReLU, pad, conv, norm]; `style` is a Linear the official block
  builds but never calls (kept: the official checkpoints hold it)."""
  features: int
  time_conditioning: str = 'official'
  norm: str = 'instance'
  dtype: Any = jnp.float32
  conv: ModuleDef = nn.Conv
  precision: Any = None

  @nn.compact
  def __call__(self, x, time_embed, z_embed):
    conv = functools.partial(models.conv_layer, self.conv, self.features, 3,
                             use_bias=models.uses_bias(self.norm), dtype=self.dtype,
                             init='xavier')
    dense_time = _dense(self.features, 'dense_time', self.precision)
    first_conv = conv(name='conv_0')
    first_norm = models.norm_layer(self.norm, self.dtype)
    padded = models.reflect_pad(x, 1)
    if self.time_conditioning == 'fixed':
      time = dense_time(time_embed)[:, None, None, :]
      out = first_norm(first_conv(padded)) + time.astype(x.dtype)
    else:
      if self.is_initializing():  # Their parameters exist, as in the official block.
        dense_time(time_embed)
        first_conv(padded)
      out = first_norm(x)
    if self.is_initializing():
      _dense(2 * self.features, 'style', self.precision)(z_embed)
    gamma, beta = jnp.split(_dense(2 * self.features, 'adaptive', self.precision)(z_embed), 2,
                            axis=1)
    out = gamma[:, None, None, :] * out + beta[:, None, None, :]
    out = nn.relu(out)
    out = models.norm_layer(self.norm, self.dtype)(conv(name='conv_1')(models.reflect_pad(out, 1)))
    return x + out


class ConditionalResnetGenerator(nn.Module):
  """`ResnetGenerator_ncsn` (antialiased down- and upsampling, as UNSB runs
  it): c7s1-ngf, two blurred downsamplings, n_blocks conditional residual
  blocks, two blurred upsamplings, c7s1-output_nc, tanh. z is (N, 4 ngf).

  Called without t, it translates: the official test-time chain of `nfe`
  steps (0: num_timesteps) from x, its noise and z drawn from
  PRNGKey(`seed`), giving the prediction of the last step; `every_step`
  gives the prediction of each step (NFE 1, 2, ...). Each image of a batch
  gets the noise and z one image alone would get: a translation depends on
  the image and the seed only, not on its batch (a video's frames all see
  the same noise, so there is no flicker from fresh noise)."""
  n_blocks: int = 9
  ngf: int = 64
  output_nc: int = 3
  n_mlp: int = 3
  time_conditioning: str = 'official'
  num_timesteps: int = 5
  tau: float = 0.01
  nfe: int = 0
  seed: int = 0
  # What services read of every generator: no dropout layers here (the
  # randomness of a translation is its noise, drawn from PRNGKey(seed)).
  dropout: bool = False
  dropout_at_test: bool = False
  draws_noise = True  # Not a field: every translation draws z and the bridge's noise.
  norm: str = 'instance'
  dtype: Any = jnp.float32
  conv: ModuleDef = nn.Conv
  precision: Any = None

  def encoder_layers(self) -> list:
    """The official `self.model`, one callable per entry (CUT's NCE layers 0
    to 11 count them; the residual blocks are 12 onwards)."""
    conv = functools.partial(models.conv_layer, self.conv, use_bias=models.uses_bias(self.norm),
                             dtype=self.dtype, init='xavier')
    norm = lambda: models.norm_layer(self.norm, self.dtype)
    layers = [lambda x: models.reflect_pad(x.astype(self.dtype), 3), conv(self.ngf, 7),
              norm(), nn.relu]
    for mult in (2, 4):
      layers += [conv(self.ngf * mult, 3, padding=1), norm(), nn.relu, blur.blur_downsample]
    return layers

  def decoder_layers(self) -> list:
    conv = functools.partial(models.conv_layer, self.conv, use_bias=models.uses_bias(self.norm),
                             dtype=self.dtype, init='xavier')
    layers = []
    for mult in (2, 1):
      layers += [blur.blur_upsample, conv(self.ngf * mult, 3, padding=1),
                 models.norm_layer(self.norm, self.dtype), nn.relu]
    return layers + [lambda x: models.reflect_pad(x, 3),
                     models.conv_layer(self.conv, self.output_nc, 7, dtype=self.dtype, init='xavier'),
                     lambda x: jnp.tanh(x.astype(jnp.float32))]

  def __call__(self, x, t=None, z=None, nce_layers: tuple[int, ...] = (), train: bool = True):
    """G(x, t, z); with `nce_layers`, the outputs of those layers (encoder
    entries and residual blocks, counted as the official code counts them)
    instead, the layers after the last one not run. Without t: the
    translation of x (the class docstring). `train` changes nothing (no
    dropout, instance norm): the interface of every generator."""
    del train
    if t is not None:
      return self.predict(x, t, z, nce_layers)
    return self.every_step(x)[-1]

  def every_step(self, x) -> list:
    """[the prediction of x_1 after 1, 2, ..., nfe (0: num_timesteps) steps]
    of the test-time chain from x (the official test: x_t from the bridge
    between x_{t-1} and G's last prediction)."""
    times = time_grid(self.num_timesteps)
    n = x.shape[0]
    x, predictions = x.astype(jnp.float32), []
    # Drawn for one image and broadcast: every image of a batch gets the same.
    every = lambda draw: jnp.broadcast_to(draw, (n, *draw.shape[1:]))
    draws = translation_draws(self.seed, self.nfe or self.num_timesteps, x.shape[1:],
                              4 * self.ngf)
    for step, (z, noise) in enumerate(draws):
      if step > 0:
        x = bridge_step(x, predictions[-1], step, times, self.tau, every(noise))
      predictions.append(self.predict(x, jnp.full((n,), step, jnp.int32), every(z)))
    return predictions

  def receptive_radius(self) -> int:
    """models.receptive_radius's count for this layout: the antialiased
    resnet's (each residual block's two k3 convolutions at spacing 4; the
    'official' block runs one of them, so this bounds it)."""
    down, up = 2 * (1 + 2), (4 + 2) + (2 + 1)
    return 3 + down + 2 * 4 * self.n_blocks + up + 3

  @nn.compact
  def predict(self, x, t, z, nce_layers: tuple[int, ...] = ()):
    """G(x_t, t, z): the prediction of x_1 from x_t (the official forward)."""
    width = 4 * self.ngf
    z_embed = _mlp(pixel_norm(z.astype(jnp.float32)), [width] * (1 + self.n_mlp),
                   [f'z_transform_{i}' for i in range(1 + self.n_mlp)], self.precision)
    time_embed = _mlp(timestep_embedding(t, self.ngf), [width, width],
                      ['time_embed_0', 'time_embed_1'], self.precision)
    layers = self.encoder_layers()
    for i in range(self.n_blocks):
      block = ConditionalResnetBlock(width, self.time_conditioning, self.norm, self.dtype,
                                     self.conv, self.precision, name=f'ResnetBlock_{i}')
      layers.append(functools.partial(lambda x, block: block(x, time_embed, z_embed),
                                      block=block))
    return models.run_layers(layers + self.decoder_layers(), x, nce_layers)


class TranslationStep(nn.Module):
  """Step `step` of a translation, G(x, step, z), as a generator of one
  input: z (1, 4 ngf) is among its parameters ({'generator': G's, 'z': z}).
  What tiled translation runs for each step (tiling.py): its programs take a
  generator and its parameters only."""
  generator: ConditionalResnetGenerator
  step: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    z = self.param('z', nn.initializers.zeros, (1, 4 * self.generator.ngf))
    n = x.shape[0]
    return self.generator.predict(x, jnp.full((n,), self.step, jnp.int32),
                                  jnp.broadcast_to(z, (n, z.shape[1])))

  def receptive_radius(self) -> int:
    return self.generator.receptive_radius()


class ConditionalPatchGAN(nn.Module):
  """`NLayerDiscriminator_ncsn` (antialiased): n_layers + 1 blocks of conv k4
  s1 p1 + Dense(temb), norm (not the first), LeakyReLU 0.2, blurred
  downsampling (not the last), then a conv to one channel; temb is the
  sinusoidal embedding of t (4 ndf wide) through two Linear + LeakyReLU.
  Given `x2`, it sees [x, x2] along the channels (the entropy network E)."""
  ndf: int = 64
  n_layers: int = 3
  norm: str = 'instance'
  dtype: Any = jnp.float32
  conv: ModuleDef = nn.Conv
  precision: Any = None

  @nn.compact
  def __call__(self, x, t, x2=None):
    width = 4 * self.ndf
    time_embed = _mlp(timestep_embedding(t, width), [width, width], ['t_embed_0', 't_embed_1'],
                      self.precision)
    if x2 is not None:
      x = jnp.concatenate([x, x2], axis=-1)
    x = x.astype(self.dtype)
    for n in range(self.n_layers + 1):
      features = self.ndf * min(2**n, 8)
      x = models.conv_layer(self.conv, features, 4, padding=1, use_bias=models.uses_bias(self.norm),
                       dtype=self.dtype, init='xavier')(x)
      x = x + _dense(features, f'dense_{n}', self.precision)(time_embed)[:, None, None, :]
      if n > 0:
        x = models.norm_layer(self.norm, self.dtype)(x)
      x = nn.leaky_relu(x, negative_slope=0.2)
      if n < self.n_layers:
        x = blur.blur_downsample(x)
    x = models.conv_layer(self.conv, 1, 4, padding=1, dtype=self.dtype, init='xavier')(x)
    return x.astype(jnp.float32)
