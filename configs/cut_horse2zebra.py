"""CUT on TFDS `cycle_gan/horse2zebra` (the paper's horse -> zebra), reference defaults."""

from configs import cut


def get_config():
  return cut.get_config('cycle_gan/horse2zebra')
