"""The quick start (configs/quickstart.py: day -> dusk at 64px, no download)
with UNSB instead of CycleGAN: configs/unsb.py's method at the quick start's
sizes.

  python main.py --config=configs/quickstart_unsb.py --workdir=runs/quickstart_unsb
"""

from configs import quickstart
from configs import unsb


def get_config():
  config = quickstart.shrink(unsb.get_config(tfds_name=''))
  # resnet_3blocks counted as the reference's nn.Sequential (configs/quickstart_cut.py).
  config.train.nce_layers = (0, 4, 8, 12, 14)
  config.train.num_steps = 2000
  config.log_every_steps = 100
  config.sample_every_steps = 250
  config.checkpoint_every_steps = 500
  return config
