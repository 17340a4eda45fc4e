"""Default configuration: the official defaults of
junyanz/pytorch-CycleGAN-and-pix2pix (train options for `--model cycle_gan`),
with every model family's fields; each field is described where it is set
(cyclegan_jax/configuration.py, and each family's add_config_fields in
cyclegan_jax/families/). Other config files start from this one."""

import ml_collections

from cyclegan_jax import configuration


def get_config(tfds_name: str = 'cycle_gan/horse2zebra') -> ml_collections.ConfigDict:
  return configuration.defaults(tfds_name)
