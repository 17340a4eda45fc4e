"""A tiny CycleGAN for tests and smoke runs: 32px, ngf 8, 2 residual blocks."""

from configs import default


def shrink(config):
  """32px images, 8 filters, 4 steps that log, sample and save every 2 steps."""
  config.data.load_size = 36
  config.data.crop_size = 32
  config.data.num_workers = 2
  config.model.ngf = 8
  config.model.ndf = 8
  config.train.num_steps = 4
  config.log_every_steps = 2
  config.sample_every_steps = 2
  config.num_samples = 2
  config.checkpoint_every_steps = 2
  return config


def get_config():
  config = shrink(default.get_config())
  config.model.generator = 'resnet_2blocks'
  return config
