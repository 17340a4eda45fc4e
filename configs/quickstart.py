"""Quick start: trains in minutes on a CPU, no download.

Day -> dusk on crops of the photos scikit-image ships
(cyclegan_jax/quickstart_data.py), at 64px with a small ResNet generator.
"""

from configs import default


def get_config():
  config = shrink(default.get_config())
  # Upsampling by blur and a stride-1 convolution (CUT's antialiased
  # upsampling) instead of transposed convolutions: after these few steps
  # the transposed convolutions' 2x2 checkerboard is still plain in every
  # translation (about twice that of real photos); this keeps it at or below
  # theirs. It costs ~15% more time per step, paid for with fewer steps.
  config.model.antialias_up = True
  config.train.num_steps = 1600
  config.log_every_steps = 100
  config.sample_every_steps = 250
  config.checkpoint_every_steps = 500
  return config


def shrink(config):
  """The quick start's data and sizes, on any family's config."""
  config.data.builtin = 'skimage_dusk'
  config.data.load_size = 72
  config.data.crop_size = 64
  config.model.generator = 'resnet_3blocks'
  config.model.ngf = 16
  config.model.ndf = 16
  return config
