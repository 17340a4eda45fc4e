"""pix2pix (Isola et al. 2017) with the official defaults of
junyanz/pytorch-CycleGAN-and-pix2pix (`--model pix2pix`, as its
scripts/train_pix2pix.sh runs it): a U-Net generator with batch norm and
dropout (kept at test time), a 70x70 PatchGAN that judges (input, output)
pairs, vanilla GAN loss plus 100 x L1, no history pool, batch 1, 100 + 100
epochs.

Aligned data only: point config.data.image_dir at a folder of side-by-side AB
images (train/, test/, val/ as in the official datasets), e.g.
  python main.py --config=configs/pix2pix_facades.py \\
      --config.data.image_dir=datasets/facades --workdir=runs/facades
"""

from configs import default


def get_config(image_dir: str = '', direction: str = 'AtoB'):
  config = default.get_config(tfds_name='')
  config.data.image_dir = image_dir
  config.data.direction = direction
  config.model.kind = 'pix2pix'
  config.model.generator = 'unet_256'
  config.model.norm = 'batch'
  config.model.dropout = True
  config.model.dropout_at_test = True
  config.train.gan_mode = 'vanilla'
  config.train.lambda_l1 = 100.0
  config.train.pool_size = 0
  config.train.lambda_identity = 0.0
  return config
