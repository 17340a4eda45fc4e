"""The official UNSB networks in PyTorch, written out from cyclomon/UNSB
`models/ncsn_networks.py` (its state-dict keys included, so the tests save
official-looking checkpoints with them): the yardstick sb_models.py is
compared with. Images are NCHW, as there. Needs the `torch` extra.

`time_conditioning='official'` runs the residual block as the official
`ResnetBlock_cond.forward` does (each of [pad, conv, norm] applied to the
block's input); 'fixed' applies them in sequence and adds the time bias
after the norm (sb_models.py explains).
"""

import math

import torch
from torch import nn
import torch.nn.functional as F


def timestep_embedding(t, dim: int, max_positions: int = 10000):
  half = dim // 2
  scale = math.log(max_positions) / (half - 1)
  frequencies = torch.exp(torch.arange(half, dtype=torch.float32) * -scale)
  angles = t.float()[:, None] * frequencies[None, :]
  embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
  return F.pad(embedding, (0, dim % 2))


class PixelNorm(nn.Module):

  def forward(self, x):
    return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


def _blur_filter(taps):
  a = torch.tensor(taps, dtype=torch.float32)
  f = a[:, None] * a[None, :]
  return f / f.sum()


class Downsample(nn.Module):
  """Reflect-pad 1, depthwise [1, 2, 1]^2 / 16 blur, stride 2."""

  def __init__(self, channels):
    super().__init__()
    self.register_buffer('filt', _blur_filter([1., 2., 1.])[None, None].repeat(channels, 1, 1, 1))

  def forward(self, x):
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode='reflect'), self.filt, stride=2,
                    groups=x.shape[1])


class Upsample(nn.Module):
  """Replicate-pad 1, depthwise transposed [1, 3, 3, 1]^2 / 16 * 4, stride 2, cropped."""

  def __init__(self, channels):
    super().__init__()
    self.register_buffer('filt', (_blur_filter([1., 3., 3., 1.]) * 4)[None, None].repeat(
        channels, 1, 1, 1))

  def forward(self, x):
    y = F.conv_transpose2d(F.pad(x, (1, 1, 1, 1), mode='replicate'), self.filt, stride=2,
                           padding=2, groups=x.shape[1])
    return y[:, :, 1:, 1:][:, :, :-1, :-1]


def _norm(channels):
  return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class AdaptiveLayer(nn.Module):

  def __init__(self, channels, style_dim):
    super().__init__()
    self.style_net = nn.Linear(style_dim, channels * 2)

  def forward(self, x, style):
    gamma, beta = self.style_net(style)[:, :, None, None].chunk(2, 1)
    return gamma * x + beta


class ResnetBlockCond(nn.Module):

  def __init__(self, dim, temb_dim, z_dim, time_conditioning='official'):
    super().__init__()
    self.time_conditioning = time_conditioning
    self.conv_block = nn.ModuleList([nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), _norm(dim)])
    self.adaptive = AdaptiveLayer(dim, z_dim)
    self.conv_fin = nn.ModuleList([nn.ReLU(True), nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3),
                                   _norm(dim)])
    self.Dense_time = nn.Linear(temb_dim, dim)  # pylint: disable=invalid-name
    self.style = nn.Linear(z_dim, dim * 2)  # Built, never called.

  def forward(self, x, time_embed, z_embed):
    time = self.Dense_time(time_embed)[:, :, None, None]
    out = x
    for n, layer in enumerate(self.conv_block):
      if self.time_conditioning == 'official':
        out = layer(x)
        if n == 0:
          out += time  # Overwritten by the next layer, as there.
      else:
        out = layer(out)
    if self.time_conditioning == 'fixed':
      out = out + time
    out = self.adaptive(out, z_embed)
    for layer in self.conv_fin:
      out = layer(out)
    return x + out


class ResnetGeneratorNcsn(nn.Module):

  def __init__(self, input_nc=3, output_nc=3, ngf=64, n_blocks=9, n_mlp=3,
               time_conditioning='official'):
    super().__init__()
    self.ngf = ngf
    model = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7), _norm(ngf), nn.ReLU(True)]
    for mult in (1, 2):
      model += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, padding=1), _norm(ngf * mult * 2),
                nn.ReLU(True), Downsample(ngf * mult * 2)]
    self.model = nn.Sequential(*model)
    self.model_res = nn.ModuleList([ResnetBlockCond(ngf * 4, 4 * ngf, 4 * ngf, time_conditioning)
                                    for _ in range(n_blocks)])
    upsample = []
    for mult in (4, 2):
      upsample += [Upsample(ngf * mult), nn.Conv2d(ngf * mult, ngf * mult // 2, 3, padding=1),
                   _norm(ngf * mult // 2), nn.ReLU(True)]
    upsample += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
    self.model_upsample = nn.Sequential(*upsample)
    mapping = [PixelNorm(), nn.Linear(ngf * 4, ngf * 4), nn.LeakyReLU(0.2)]
    for _ in range(n_mlp):
      mapping += [nn.Linear(ngf * 4, ngf * 4), nn.LeakyReLU(0.2)]
    self.z_transform = nn.Sequential(*mapping)
    self.time_embed = nn.Sequential(nn.Linear(ngf, ngf * 4), nn.LeakyReLU(0.2),
                                    nn.Linear(ngf * 4, ngf * 4), nn.LeakyReLU(0.2))

  def forward(self, x, t, z, layers=(), encode_only=False):
    z_embed = self.z_transform(z)
    time_embed = self.time_embed(timestep_embedding(t, self.ngf))
    if layers:
      feats = []
      for k, layer in enumerate(self.model):
        x = layer(x)
        if k in layers:
          feats.append(x)
      for k, block in enumerate(self.model_res):
        x = block(x, time_embed, z_embed)
        if k + len(self.model) in layers:
          feats.append(x)
        if k + len(self.model) == layers[-1] and encode_only:
          return feats
      return x, feats
    x = self.model(x)
    for block in self.model_res:
      x = block(x, time_embed, z_embed)
    return self.model_upsample(x)


class TimestepEmbedding(nn.Module):

  def __init__(self, dim):
    super().__init__()
    self.dim = dim
    self.main = nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(0.2), nn.Linear(dim, dim),
                              nn.LeakyReLU(0.2))

  def forward(self, t):
    return self.main(timestep_embedding(t, self.dim))


class ConvBlockCond(nn.Module):

  def __init__(self, in_channels, out_channels, temb_dim, norm=True, downsample=True):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, out_channels, 4, padding=1)
    self.norm = _norm(out_channels) if norm else None
    self.act = nn.LeakyReLU(0.2, True)
    self.down = Downsample(out_channels)
    self.downsample = downsample
    self.dense = nn.Linear(temb_dim, out_channels)

  def forward(self, x, temb):
    out = self.conv1(x) + self.dense(temb)[..., None, None]
    if self.norm is not None:
      out = self.norm(out)
    out = self.act(out)
    return self.down(out) if self.downsample else out


class NLayerDiscriminatorNcsn(nn.Module):

  def __init__(self, input_nc=3, ndf=64, n_layers=3):
    super().__init__()
    blocks = [ConvBlockCond(input_nc, ndf, 4 * ndf, norm=False)]
    mult = 1
    for n in range(1, n_layers):
      previous, mult = mult, min(2**n, 8)
      blocks.append(ConvBlockCond(ndf * previous, ndf * mult, 4 * ndf))
    previous, mult = mult, min(2**n_layers, 8)
    blocks.append(ConvBlockCond(ndf * previous, ndf * mult, 4 * ndf, downsample=False))
    self.model_main = nn.ModuleList(blocks)
    self.final_conv = nn.Conv2d(ndf * mult, 1, 4, padding=1)
    self.t_embed = TimestepEmbedding(4 * ndf)

  def forward(self, x, t, x2=None):
    temb = self.t_embed(t)
    out = x if x2 is None else torch.cat([x, x2], dim=1)
    for block in self.model_main:
      out = block(out, temb)
    return self.final_conv(out)


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
  """The official init_type='xavier': every Conv and Linear weight
  xavier_normal(gain), every bias 0 (the AdaIN biases too)."""
  for module in net.modules():
    name = type(module).__name__
    if hasattr(module, 'weight') and ('Conv' in name or 'Linear' in name):
      nn.init.xavier_normal_(module.weight, gain=gain)
      if module.bias is not None:
        nn.init.zeros_(module.bias)
  return net
