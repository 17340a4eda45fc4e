"""A tiny CUT for tests and smoke runs: configs/tiny.py's sizes (32px, ngf 8,
2 residual blocks). With 2 blocks the generator's layer 12 is the first block
and 13 the last, so the NCE layers are 0, 4, 8, 12, 13 (the reference's 16 is
the fifth of nine blocks)."""

from configs import cut
from configs import tiny


def get_config():
  config = tiny.shrink(cut.get_config(tfds_name=''))
  config.model.generator = 'resnet_2blocks'
  config.train.nce_layers = (0, 4, 8, 12, 13)
  return config
