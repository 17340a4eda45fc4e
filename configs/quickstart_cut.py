"""The quick start (configs/quickstart.py: day -> dusk at 64px, no download)
with CUT instead of CycleGAN: configs/cut.py's method at the quick start's
sizes.

  python main.py --config=configs/quickstart_cut.py --workdir=runs/quickstart_cut
"""

from configs import cut
from configs import quickstart


def get_config():
  config = quickstart.shrink(cut.get_config(tfds_name=''))
  # resnet_3blocks counted as the reference's nn.Sequential: the first
  # residual block is layer 12, the last 14 (resnet_9blocks: 16 is the fifth).
  config.train.nce_layers = (0, 4, 8, 12, 14)
  config.train.num_steps = 2000
  config.log_every_steps = 100
  config.sample_every_steps = 250
  config.checkpoint_every_steps = 500
  return config
