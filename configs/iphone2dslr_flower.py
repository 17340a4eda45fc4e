"""CycleGAN on TFDS `cycle_gan/iphone2dslr_flower` with the official defaults."""

from configs import default


def get_config():
  return default.get_config('cycle_gan/iphone2dslr_flower')
