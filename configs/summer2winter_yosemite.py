"""CycleGAN on TFDS `cycle_gan/summer2winter_yosemite` with the official defaults."""

from configs import default


def get_config():
  return default.get_config('cycle_gan/summer2winter_yosemite')
