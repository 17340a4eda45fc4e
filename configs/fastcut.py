"""FastCUT (Park et al., ECCV 2020; `--CUT_mode FastCUT` of the reference
code): CUT without the identity NCE term, lambda_NCE 10, flip-equivariance
augmentation, 150 + 50 epochs. Everything else as configs/cut.py.
"""

from configs import cut


def get_config(tfds_name: str = 'cycle_gan/horse2zebra'):
  config = cut.get_config(tfds_name)
  config.train.nce_idt = False
  config.train.lambda_nce = 10.0
  config.train.flip_equivariance = True
  config.train.n_epochs = 150
  config.train.n_epochs_decay = 50
  return config
