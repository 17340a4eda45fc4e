"""A tiny pix2pix for tests and smoke runs: 32px, ngf/ndf 8, a 5-level U-Net."""

from configs import pix2pix


def get_config():
  config = pix2pix.get_config()
  config.data.load_size = 36
  config.data.crop_size = 32
  config.data.num_workers = 2
  config.model.generator = 'unet_32'
  config.model.ngf = 8
  config.model.ndf = 8
  config.train.num_steps = 4
  config.log_every_steps = 2
  config.sample_every_steps = 2
  config.num_samples = 2
  config.checkpoint_every_steps = 2
  return config
