"""The official CycleGAN in PyTorch, the yardstick our speed is measured against.

The layers of junyanz/pytorch-CycleGAN-and-pix2pix `models/networks.py`
(state-dict keys included, so the tests save official-looking checkpoints with
them) and the training step of `models/cycle_gan_model.py`: one Adam over both
generators and one over both discriminators, LSGAN, lambda 10 / identity 0.5,
the 50-image pool, the discriminator loss times 0.5, generators first, then
discriminators. Images are NCHW, as there. Needs the `torch` extra.
"""

import itertools
import random
import re

import torch
from torch import nn


def norm_layer(norm: str = 'instance', track_running_stats: bool = False):
  """Official `get_norm_layer`: InstanceNorm2d(affine=False) or BatchNorm2d(affine=True)."""
  if norm == 'batch':
    return lambda c: nn.BatchNorm2d(c, affine=True, track_running_stats=True)
  return lambda c: nn.InstanceNorm2d(c, affine=False, track_running_stats=track_running_stats)


class ResnetBlock(nn.Module):

  def __init__(self, dim, norm, dropout, bias=True):
    super().__init__()
    layers = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), norm(dim), nn.ReLU(True)]
    layers += [nn.Dropout(0.5)] if dropout else []
    layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), norm(dim)]
    self.conv_block = nn.Sequential(*layers)

  def forward(self, x):
    return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
  """c7s1-ngf, d2ngf, d4ngf, n_blocks x R4ngf, u2ngf, ungf, c7s1-3, tanh."""

  def __init__(self, ngf=64, n_blocks=9, track_running_stats=False, dropout=False,
               norm='instance', input_nc=3, output_nc=3):
    super().__init__()
    # Official `use_bias = norm_layer == InstanceNorm2d`.
    bias, norm = norm != 'batch', norm_layer(norm, track_running_stats)
    layers = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=bias), norm(ngf),
              nn.ReLU(True)]
    for mult in (1, 2):
      layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=bias),
                 norm(ngf * mult * 2), nn.ReLU(True)]
    layers += [ResnetBlock(ngf * 4, norm, dropout, bias) for _ in range(n_blocks)]
    for mult in (4, 2):
      layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1,
                                    output_padding=1, bias=bias),
                 norm(ngf * mult // 2), nn.ReLU(True)]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
    self.model = nn.Sequential(*layers)

  def forward(self, x):
    return self.model(x)


class UnetBlock(nn.Module):

  def __init__(self, outer, inner, submodule=None, outermost=False, innermost=False,
               norm='instance', dropout=False, input_nc=None):
    super().__init__()
    self.outermost = outermost
    bias, norm = norm != 'batch', norm_layer(norm)
    down = nn.Conv2d(input_nc or outer, inner, 4, stride=2, padding=1, bias=bias)
    up = nn.ConvTranspose2d(inner if innermost else inner * 2, outer, 4, stride=2, padding=1,
                            bias=bias or outermost)
    if outermost:
      layers = [down, submodule, nn.ReLU(True), up, nn.Tanh()]
    elif innermost:
      layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True), up, norm(outer)]
    else:
      layers = [nn.LeakyReLU(0.2, True), down, norm(inner), submodule, nn.ReLU(True), up,
                norm(outer)] + ([nn.Dropout(0.5)] if dropout else [])
    self.model = nn.Sequential(*layers)

  def forward(self, x):
    return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):

  def __init__(self, num_downs=8, ngf=64, norm='instance', dropout=False, input_nc=3,
               output_nc=3):
    super().__init__()
    block = UnetBlock(ngf * 8, ngf * 8, innermost=True, norm=norm)
    for _ in range(num_downs - 5):
      block = UnetBlock(ngf * 8, ngf * 8, block, norm=norm, dropout=dropout)
    for mult in (4, 2, 1):
      block = UnetBlock(ngf * mult, ngf * mult * 2, block, norm=norm)
    self.model = UnetBlock(output_nc, ngf, block, outermost=True, norm=norm, input_nc=input_nc)

  def forward(self, x):
    return self.model(x)


class NLayerDiscriminator(nn.Module):
  """PatchGAN; n_layers=3 is the 70x70 `basic` discriminator."""

  def __init__(self, input_nc=3, ndf=64, n_layers=3, norm='instance'):
    super().__init__()
    bias, norm = norm != 'batch', norm_layer(norm)
    layers = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
    mult = 1
    for n in range(1, n_layers + 1):
      prev, mult = mult, min(2**n, 8)
      layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2 if n < n_layers else 1,
                           padding=1, bias=bias),
                 norm(ndf * mult), nn.LeakyReLU(0.2, True)]
    layers += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
    self.model = nn.Sequential(*layers)

  def forward(self, x):
    return self.model(x)


def init_weights(net: nn.Module) -> nn.Module:
  """Official `init_weights(init_type='normal', init_gain=0.02)`."""
  for m in net.modules():
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
      nn.init.normal_(m.weight, 0.0, 0.02)
      if m.bias is not None:
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
      nn.init.normal_(m.weight, 1.0, 0.02)
      nn.init.zeros_(m.bias)
  return net


class ImagePool:
  """Official `util/image_pool.py`: while not full, store and return; then
  with p=0.5 return a stored image and store the new one in its place.

  `draw()` makes the choice for a full pool: the index of the stored image to
  return (and replace), or None to return the new image. By default the
  official draws from Python's `random`, in the official order; a test can
  replay another pool's choices instead."""

  def __init__(self, pool_size: int, draw=None):
    self.pool_size, self.images = pool_size, []
    self.draw = draw or (lambda: random.randint(0, self.pool_size - 1)
                         if random.uniform(0, 1) > 0.5 else None)

  def query(self, images):
    if self.pool_size == 0:
      return images
    returned = []
    for image in images:
      image = image.data.unsqueeze(0)
      if len(self.images) < self.pool_size:
        self.images.append(image)
        returned.append(image)
      elif (index := self.draw()) is not None:
        returned.append(self.images[index].clone())
        self.images[index] = image
      else:
        returned.append(image)
    return torch.cat(returned, 0)


class CycleGAN:
  """`CycleGANModel` reduced to what a training step does, with the official
  option names: G_A maps A to B, D_A judges G_A's outputs (domain B)."""

  def __init__(self, ngf=64, ndf=64, n_blocks=9, n_layers_d=3, lr=2e-4, beta1=0.5,
               lambda_cycle=10.0, lambda_identity=0.5, pool_size=50, device='cpu',
               input_nc=3, output_nc=3):
    make = lambda net: init_weights(net).to(device)
    # Official define_G(input_nc, output_nc) for G_A, (output_nc, input_nc) for
    # G_B; D_A judges domain B (output_nc channels), D_B domain A.
    self.netG_A = make(ResnetGenerator(ngf, n_blocks, input_nc=input_nc, output_nc=output_nc))
    self.netG_B = make(ResnetGenerator(ngf, n_blocks, input_nc=output_nc, output_nc=input_nc))
    self.netD_A = make(NLayerDiscriminator(output_nc, ndf, n_layers_d))
    self.netD_B = make(NLayerDiscriminator(input_nc, ndf, n_layers_d))
    self.lambda_cycle, self.lambda_identity = lambda_cycle, lambda_identity
    self.pool_A, self.pool_B = ImagePool(pool_size), ImagePool(pool_size)
    self.optimizer_G = torch.optim.Adam(
        itertools.chain(self.netG_A.parameters(), self.netG_B.parameters()), lr=lr,
        betas=(beta1, 0.999))
    self.optimizer_D = torch.optim.Adam(
        itertools.chain(self.netD_A.parameters(), self.netD_B.parameters()), lr=lr,
        betas=(beta1, 0.999))

  @staticmethod
  def gan_loss(prediction, target_is_real: bool):  # LSGAN: MSE to 1 or 0.
    target = torch.full_like(prediction, 1.0 if target_is_real else 0.0)
    return nn.functional.mse_loss(prediction, target)

  @staticmethod
  def set_requires_grad(nets, requires_grad: bool):
    for net in nets:
      for p in net.parameters():
        p.requires_grad = requires_grad

  def optimize_parameters(self, real_A, real_B) -> dict:
    """One official training iteration; returns the losses (detached tensors,
    so that nothing waits for the device here)."""
    lam, idt = self.lambda_cycle, self.lambda_identity
    # forward()
    fake_B = self.netG_A(real_A)
    rec_A = self.netG_B(fake_B)
    fake_A = self.netG_B(real_B)
    rec_B = self.netG_A(fake_A)
    # G_A and G_B, through frozen discriminators.
    self.set_requires_grad([self.netD_A, self.netD_B], False)
    self.optimizer_G.zero_grad()
    loss = {}
    if idt > 0:
      loss['idt_A'] = nn.functional.l1_loss(self.netG_A(real_B), real_B) * lam * idt
      loss['idt_B'] = nn.functional.l1_loss(self.netG_B(real_A), real_A) * lam * idt
    loss['G_A'] = self.gan_loss(self.netD_A(fake_B), True)
    loss['G_B'] = self.gan_loss(self.netD_B(fake_A), True)
    loss['cycle_A'] = nn.functional.l1_loss(rec_A, real_A) * lam
    loss['cycle_B'] = nn.functional.l1_loss(rec_B, real_B) * lam
    sum(loss.values()).backward()
    self.optimizer_G.step()
    # D_A and D_B, on real images and pooled fakes.
    self.set_requires_grad([self.netD_A, self.netD_B], True)
    self.optimizer_D.zero_grad()
    for name, net, real, fake in (('D_A', self.netD_A, real_B, self.pool_B.query(fake_B)),
                                  ('D_B', self.netD_B, real_A, self.pool_A.query(fake_A))):
      d_loss = 0.5 * (self.gan_loss(net(real), True) + self.gan_loss(net(fake.detach()), False))
      d_loss.backward()
      loss[name] = d_loss
    self.optimizer_D.step()
    return {k: v.detach() for k, v in loss.items()}


def _resnet_blocks(generator: str) -> int:
  match = re.fullmatch(r'resnet_(\d+)blocks', generator)
  if not match:
    raise ValueError(f'--compare=torch: config.model.generator={generator!r}; the PyTorch '
                     'baseline is the official CycleGAN, with a resnet_<N>blocks generator')
  return int(match.group(1))


class Baseline:
  """The official step (task 'train') or one generator in eval() under
  no_grad (task 'translate') on random images of the config's size and batch,
  on the device JAX uses, with `torch.autocast(bfloat16)` when the config asks
  for bfloat16. `run()` does one and waits for the device."""

  def __init__(self, config, task: str, platform: str, device_count: int):
    m, t = config.model, config.train
    if m.kind not in ('cyclegan', 'unsb') or (m.kind == 'unsb' and task != 'train'):
      raise ValueError(f'--compare=torch: config.model.kind={m.kind!r} --task={task}; the '
                       "PyTorch baseline is the official CycleGAN's step or generator, or "
                       "UNSB's step")
    if m.discriminator not in ('basic', 'n_layers') or m.norm != 'instance':
      raise ValueError('--compare=torch: the PyTorch baseline has the official defaults, '
                       'basic/n_layers PatchGAN discriminators and instance norm; got '
                       f'config.model.discriminator={m.discriminator!r}, '
                       f'config.model.norm={m.norm!r}')
    if t.gan_mode != 'lsgan':
      raise ValueError(f'--compare=torch: config.train.gan_mode={t.gan_mode!r}; the PyTorch '
                       'baseline is the official default, lsgan')
    if device_count != 1:
      raise ValueError(f'--compare=torch times one device against one device; this process '
                       f'sees {device_count} (XLA_FLAGS or CUDA_VISIBLE_DEVICES)')
    if platform == 'gpu':
      if not torch.cuda.is_available():
        raise ValueError('--compare=torch: JAX runs on a GPU but this PyTorch build sees none '
                         '(a CPU-only wheel?)')
      self.device = torch.device('cuda')
      torch.backends.cudnn.benchmark = True  # As the official train.py sets it.
    elif platform == 'cpu':
      self.device = torch.device('cpu')
    else:
      raise ValueError(f'--compare=torch: PyTorch does not run on {platform!r}')
    self.version = torch.__version__
    self.device_name = (torch.cuda.get_device_name() if self.device.type == 'cuda'
                        else 'cpu')
    self.autocast_dtype = 'bfloat16' if m.dtype == 'bfloat16' else None
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    size, batch = config.data.crop_size, t.batch_size
    input_nc, output_nc = m.input_nc, m.output_nc
    images = lambda c: torch.rand(batch, c, size, size, device=self.device) * 2 - 1
    n_blocks = _resnet_blocks(m.generator)
    self.time_index = None  # UNSB: the step index k of the last step, 0, 1, ... in turn.
    if m.kind == 'unsb':
      from cyclegan_jax import unsb_reference  # pylint: disable=import-outside-toplevel
      model = unsb_reference.UNSB(
          ngf=m.ngf, ndf=m.ndf, n_blocks=n_blocks, n_mlp=m.unsb_n_mlp,
          n_layers_d=m.n_layers_d if m.discriminator == 'n_layers' else 3,
          time_conditioning=m.unsb_time_conditioning, num_timesteps=m.unsb_num_timesteps,
          tau=m.unsb_tau, lambda_gan=t.lambda_gan, lambda_nce=t.lambda_nce,
          lambda_sb=t.lambda_sb, nce_layers=list(t.nce_layers), num_patches=t.num_patches,
          nce_t=t.nce_t, netf_nc=m.netf_nc, lr=t.lr, beta1=t.beta1, device=self.device,
          input_nc=input_nc, output_nc=output_nc)
      real_a, real_a2, real_b = images(input_nc), images(input_nc), images(output_nc)
      steps = itertools.count()

      def unsb_step():
        self.time_index = next(steps) % m.unsb_num_timesteps
        model.optimize_parameters(real_a, real_a2, real_b, self.time_index)

      self._once = unsb_step
    elif task == 'train':
      model = CycleGAN(ngf=m.ngf, ndf=m.ndf, n_blocks=n_blocks,
                       n_layers_d=m.n_layers_d if m.discriminator == 'n_layers' else 3,
                       lr=t.lr, beta1=t.beta1, lambda_cycle=t.lambda_cycle,
                       lambda_identity=t.lambda_identity, pool_size=t.pool_size,
                       device=self.device, input_nc=input_nc, output_nc=output_nc)
      real_a, real_b = images(input_nc), images(output_nc)
      self._once = lambda: model.optimize_parameters(real_a, real_b)
    else:
      net = init_weights(ResnetGenerator(m.ngf, n_blocks, input_nc=input_nc,
                                         output_nc=output_nc)).to(self.device).eval()
      x = images(input_nc)

      def translate():
        with torch.no_grad():
          return net(x)

      self._once = translate

  def run(self) -> None:
    with torch.autocast(self.device.type, dtype=torch.bfloat16,
                        enabled=self.autocast_dtype is not None):
      self._once()
    if self.device.type == 'cuda':
      torch.cuda.synchronize()

  def peak_memory_bytes(self) -> int | None:
    return torch.cuda.max_memory_allocated() if self.device.type == 'cuda' else None
