"""A tiny UNSB for tests and smoke runs: configs/tiny.py's sizes (32px, ngf 8,
2 residual blocks; NCE layers 0, 4, 8, 12, 13 as configs/tiny_cut.py), T = 3
steps and one layer in the z mapping."""

from configs import tiny
from configs import unsb


def get_config():
  config = tiny.shrink(unsb.get_config(tfds_name=''))
  config.model.generator = 'resnet_2blocks'
  config.train.nce_layers = (0, 4, 8, 12, 13)
  config.model.unsb_num_timesteps = 3
  config.model.unsb_n_mlp = 1
  return config
