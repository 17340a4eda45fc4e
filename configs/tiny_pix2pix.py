"""A tiny pix2pix for tests and smoke runs: 32px, ngf/ndf 8, a 5-level U-Net."""

from configs import pix2pix
from configs import tiny


def get_config():
  config = tiny.shrink(pix2pix.get_config())
  config.model.generator = 'unet_32'
  return config
