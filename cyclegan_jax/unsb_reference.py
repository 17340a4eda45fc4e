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

import numpy as np
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


class PatchSampleF(nn.Module):
  """CUT's PatchSampleF (mlp_sample): per layer, the same random positions
  for every image, a Linear-ReLU-Linear head (made at the first call, as the
  reference does), L2-normalised."""

  def __init__(self, nc=256):
    super().__init__()
    self.nc, self.mlps = nc, None

  def forward(self, feats, num_patches, patch_ids=None):
    if self.mlps is None:
      self.mlps = nn.ModuleList([
          nn.Sequential(nn.Linear(f.shape[1], self.nc), nn.ReLU(), nn.Linear(self.nc, self.nc))
          for f in feats]).to(feats[0].device)
      init_weights(self.mlps)
    samples, ids = [], []
    for i, feat in enumerate(feats):
      flat = feat.permute(0, 2, 3, 1).flatten(1, 2)
      patch_id = (patch_ids[i] if patch_ids is not None
                  else torch.randperm(flat.shape[1], device=feat.device)[:min(num_patches,
                                                                               flat.shape[1])])
      x = self.mlps[i](flat[:, patch_id, :].flatten(0, 1))
      samples.append(x / (x.pow(2).sum(1, keepdim=True).pow(0.5) + 1e-7))
      ids.append(patch_id)
    return samples, ids


def patch_nce_loss(feat_q, feat_k, batch_size, nce_t):
  """CUT's PatchNCELoss (negatives from the same image), per patch."""
  num_patches, dim = feat_q.shape
  feat_k = feat_k.detach()
  l_pos = torch.bmm(feat_q.view(num_patches, 1, -1), feat_k.view(num_patches, -1, 1)).view(-1, 1)
  q, k = feat_q.view(batch_size, -1, dim), feat_k.view(batch_size, -1, dim)
  patches = q.shape[1]
  l_neg = torch.bmm(q, k.transpose(2, 1))
  l_neg = l_neg.masked_fill(torch.eye(patches, dtype=torch.bool, device=q.device)[None], -10.0)
  logits = torch.cat([l_pos, l_neg.view(-1, patches)], dim=1) / nce_t
  return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=q.device),
                         reduction='none')


class UNSB:
  """The reference's train step (models/sb_model.py forward and
  optimize_parameters) on the networks above, for timing: the chains from A,
  A2 and B one after the other, each k + 1 calls of G (the last one's output
  unused), fake = G([A_k, B_k]) and fake_B2 = G(A2_k); D, then E, then G and
  F, each with its own Adam. `optimize_parameters(a, a2, b, k)` takes the
  step index instead of drawing it, so that a timing can average over k."""

  def __init__(self, *, ngf, ndf, n_blocks, n_mlp, n_layers_d, time_conditioning,
               num_timesteps, tau, lambda_gan, lambda_nce, lambda_sb, nce_layers, num_patches,
               nce_t, netf_nc, lr, beta1, device, input_nc=3, output_nc=3):
    self.ngf, self.num_timesteps, self.tau = ngf, num_timesteps, tau
    self.lambda_gan, self.lambda_nce, self.lambda_sb = lambda_gan, lambda_nce, lambda_sb
    self.nce_layers, self.num_patches, self.nce_t = list(nce_layers), num_patches, nce_t
    self.device = device
    self.net_g = init_weights(ResnetGeneratorNcsn(input_nc, output_nc, ngf, n_blocks, n_mlp,
                                                  time_conditioning)).to(device)
    self.net_d = init_weights(NLayerDiscriminatorNcsn(output_nc, ndf, n_layers_d)).to(device)
    self.net_e = init_weights(NLayerDiscriminatorNcsn(2 * (input_nc + output_nc), ndf,
                                                      n_layers_d)).to(device)
    self.net_f = PatchSampleF(netf_nc)
    adam = lambda net: torch.optim.Adam(net.parameters(), lr=lr, betas=(beta1, 0.999))
    self.opt_g, self.opt_d, self.opt_e = adam(self.net_g), adam(self.net_d), adam(self.net_e)
    self.opt_f = None  # Made after F's first call, as the reference's data_dependent_initialize.
    incs = np.array([0] + [1 / (i + 1) for i in range(num_timesteps - 1)])
    times = np.cumsum(incs)
    times = times / times[-1]
    times = np.concatenate([np.zeros(1), 0.5 * times[-1] + 0.5 * times])
    self.times = torch.tensor(times).float().to(device)

  def _z(self, n):
    return torch.randn(n, 4 * self.ngf, device=self.device)

  def _chain(self, x, k):
    times, n, predicted = self.times, x.shape[0], None
    for t in range(k + 1):
      if t > 0:
        delta, denom = times[t] - times[t - 1], times[-1] - times[t - 1]
        inter, scale = delta / denom, delta * (1 - delta / denom)
        x = (1 - inter) * x + inter * predicted + (scale * self.tau).sqrt() * torch.randn_like(x)
      t_index = torch.full((n,), t, dtype=torch.long, device=self.device)
      predicted = self.net_g(x, t_index, self._z(n))
    return x

  def _nce(self, src, tgt, time_idx):
    z = self._z(src.shape[0])
    feat_q = self.net_g(tgt, time_idx * 0, z, self.nce_layers, encode_only=True)
    feat_k = self.net_g(src, time_idx * 0, z, self.nce_layers, encode_only=True)
    pool_k, ids = self.net_f(feat_k, self.num_patches)
    pool_q, _ = self.net_f(feat_q, self.num_patches, ids)
    total = sum(patch_nce_loss(q, k, src.shape[0], self.nce_t).mean() * self.lambda_nce
                for q, k in zip(pool_q, pool_k))
    return total / len(self.nce_layers)

  def optimize_parameters(self, real_a, real_a2, real_b, k: int):
    n = real_a.shape[0]
    time_idx = torch.full((1,), k, dtype=torch.long, device=self.device)
    with torch.no_grad():
      self.net_g.eval()
      a_k, a2_k, b_k = self._chain(real_a, k), self._chain(real_a2, k), self._chain(real_b, k)
    self.net_g.train()
    fake = self.net_g(torch.cat([a_k, b_k]), time_idx, self._z(2 * n))
    fake_b2 = self.net_g(a2_k, time_idx, self._z(n))
    fake_b, idt_b = fake[:n], fake[n:]
    mse = lambda pred, target: F.mse_loss(pred, torch.full_like(pred, target))
    # D.
    self.opt_d.zero_grad()
    loss_d = 0.5 * (mse(self.net_d(fake_b.detach(), time_idx), 0.0)
                    + mse(self.net_d(real_b, time_idx), 1.0))
    loss_d.backward()
    self.opt_d.step()
    # E.
    self.opt_e.zero_grad()
    xx1 = torch.cat([a_k, fake_b.detach()], dim=1)
    xx2 = torch.cat([a2_k, fake_b2.detach()], dim=1)
    temp = torch.logsumexp(self.net_e(xx1, time_idx, xx2).reshape(-1), dim=0).mean()
    loss_e = -self.net_e(xx1, time_idx, xx1).mean() + temp + temp**2
    loss_e.backward()
    self.opt_e.step()
    # G and F, through the updated D and E (their gradients not kept).
    for net in (self.net_d, self.net_e):
      net.requires_grad_(False)
    self.opt_g.zero_grad()
    if self.opt_f is not None:
      self.opt_f.zero_grad()
    loss_g = 0.0  # Each term computed only with a weight > 0, as the reference does.
    if self.lambda_gan > 0:
      loss_g = loss_g + mse(self.net_d(fake_b, time_idx), 1.0) * self.lambda_gan
    if self.lambda_sb > 0:
      xx1, xx2 = torch.cat([a_k, fake_b], dim=1), torch.cat([a2_k, fake_b2], dim=1)
      et_xy = (self.net_e(xx1, time_idx, xx1).mean()
               - torch.logsumexp(self.net_e(xx1, time_idx, xx2).reshape(-1), dim=0))
      loss_sb = (-(self.num_timesteps - k) / self.num_timesteps * self.tau * et_xy
                 + self.tau * torch.mean((a_k - fake_b)**2))
      loss_g = loss_g + self.lambda_sb * loss_sb
    if self.lambda_nce > 0:
      loss_g = loss_g + self.lambda_nce * 0.5 * (self._nce(real_a, fake_b, time_idx)
                                                 + self._nce(real_b, idt_b, time_idx))
    loss_g.backward()
    self.opt_g.step()
    if self.opt_f is None and self.net_f.mlps is not None:
      self.opt_f = torch.optim.Adam(self.net_f.parameters(), lr=self.opt_g.defaults['lr'],
                                    betas=self.opt_g.defaults['betas'])
    elif self.opt_f is not None:
      self.opt_f.step()
    for net in (self.net_d, self.net_e):
      net.requires_grad_(True)
