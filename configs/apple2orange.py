"""CycleGAN on TFDS `cycle_gan/apple2orange` with the official defaults."""

from configs import default


def get_config():
  return default.get_config('cycle_gan/apple2orange')
