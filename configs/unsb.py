"""UNSB (Kim et al., ICLR 2024) with the defaults of the reference code,
cyclomon/UNSB (`--model sb --mode sb`), as its README's horse2zebra command
runs it (`--lambda_SB 1.0 --lambda_NCE 1.0`; the code's own lambda_SB
default is 0.1): CUT's antialiased resnet_9blocks generator conditioned on
the time step and a noise vector (z mapped by 1 + 3 layers), the
time-conditioned basic PatchGAN and entropy network, xavier init (gain
0.02), T = 5 steps, tau 0.01, LSGAN with lambda_GAN 1, PatchNCE (lambda_NCE
1, applied twice as the reference does; layers 0,4,8,12,16; 256 patches;
temperature 0.07) with the identity term; no history pool; Adam 2e-4 (0.5,
0.999); batch 1; 200 + 200 epochs. The time conditioning is the official
block's (`model.unsb_time_conditioning='official'`: the generator ignores
t); 'fixed' conditions it. docs/families.md lists each value with its
source line.

  python main.py --config=configs/unsb.py --config.data.image_dir=datasets/horse2zebra \\
      --workdir=runs/unsb
"""

from configs import cut


def get_config(tfds_name: str = 'cycle_gan/horse2zebra'):
  config = cut.get_config(tfds_name)
  config.model.kind = 'unsb'
  config.model.unsb_num_timesteps = 5
  config.model.unsb_tau = 0.01
  config.model.unsb_n_mlp = 3
  config.model.unsb_time_conditioning = 'official'
  config.model.unsb_nfe = 0  # Translations take all T steps.
  config.train.lambda_sb = 1.0
  return config
