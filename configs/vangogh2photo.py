"""CycleGAN on TFDS `cycle_gan/vangogh2photo` with the official defaults."""

from configs import default


def get_config():
  return default.get_config('cycle_gan/vangogh2photo')
