"""UNSB on TFDS `cycle_gan/horse2zebra` (the paper's horse -> zebra), reference defaults."""

from configs import unsb


def get_config():
  return unsb.get_config('cycle_gan/horse2zebra')
