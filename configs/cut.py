"""CUT (Park et al., ECCV 2020) with the defaults of the reference code,
taesungp/contrastive-unpaired-translation (`--model cut`, CUT_mode CUT): an
antialiased resnet_9blocks generator and basic PatchGAN, xavier init (gain
0.02), LSGAN with lambda_GAN 1, PatchNCE (lambda_NCE 1, layers 0,4,8,12,16,
256 patches, temperature 0.07) on A -> G(A) and, as the identity term, on
B -> G(B); no history pool; Adam 2e-4 (0.5, 0.999); batch 1; 200 + 200
epochs. docs/families.md lists each value with its source line.

  python main.py --config=configs/cut.py --config.data.image_dir=datasets/horse2zebra \\
      --workdir=runs/cut
"""

from configs import default


def get_config(tfds_name: str = 'cycle_gan/horse2zebra'):
  config = default.get_config(tfds_name)
  config.model.kind = 'cut'
  config.model.generator = 'resnet_9blocks'
  config.model.discriminator = 'basic'
  config.model.init = 'xavier'
  config.model.antialias = True
  config.model.antialias_up = True
  config.model.dropout = False
  config.model.netf_nc = 256
  config.train.gan_mode = 'lsgan'
  config.train.lambda_gan = 1.0
  config.train.lambda_nce = 1.0
  config.train.nce_idt = True
  config.train.nce_layers = (0, 4, 8, 12, 16)
  config.train.num_patches = 256
  config.train.nce_t = 0.07
  config.train.flip_equivariance = False
  config.train.pool_size = 0  # CUT has no history pool.
  config.train.lambda_identity = 0.0  # CycleGAN's L1 identity term; CUT's is nce_idt.
  config.train.n_epochs = 200
  config.train.n_epochs_decay = 200
  return config
