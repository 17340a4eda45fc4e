"""FastCUT on TFDS `cycle_gan/horse2zebra`, reference defaults."""

from configs import fastcut


def get_config():
  return fastcut.get_config('cycle_gan/horse2zebra')
