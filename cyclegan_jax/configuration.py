"""A config's lifecycle, in one place:
- `defaults()`: today's defaults, the official ones of
  junyanz/pytorch-CycleGAN-and-pix2pix (train options for `--model cycle_gan`),
  with every registered family's own fields (families: add_config_fields);
  configs/default.py returns it, and every config file starts from it.
- `upgrade(stored)`: a config.json as training wrote it, merged over today's
  defaults (and FORMER_DEFAULTS), so that a workdir written before a field
  existed reads as it was trained; tuples that JSON stored as lists are
  tuples again. After that the library reads plain attributes.
- `load(workdir)`: a workdir's config.json, upgraded.
"""

import json

import ml_collections

from cyclegan_jax import checkpoints
from cyclegan_jax import families
from cyclegan_jax import storage
from cyclegan_jax import sweeps

# Fields whose default changed since workdirs were first written: the value a
# config.json without the field was trained with, where today's default is
# another. Every field added so far was added with the default that gave the
# behaviour before it (model.kind 'cyclegan', model.norm 'instance',
# model.init 'normal', model.input_nc 3, ...), so none is listed yet.
FORMER_DEFAULTS = {}


def defaults(tfds_name: str = 'cycle_gan/horse2zebra') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  # True: reruns are bit-identical on GPUs too. main.py sets XLA's
  # --xla_gpu_deterministic_ops=true before JAX starts (its cost is the
  # speed of some GPU kernels); CPUs and TPUs are deterministic anyway.
  config.deterministic = True

  config.data = ml_collections.ConfigDict()
  config.data.tfds_name = tfds_name
  config.data.tfds_data_dir = ''  # Empty: TFDS's default (~/tensorflow_datasets).
  # CycleGAN: a folder with trainA/ trainB/ testA/ testB/; empty: TFDS.
  # pix2pix: a folder with train/ test/ (val/) of side-by-side AB images (the
  # official `aligned` layout), or trainA/ trainB/ testA/ testB/ paired by file name.
  config.data.image_dir = ''
  # A dataset built once from files an installed package ships ('skimage_dusk'
  # for the quick start), into cache_dir; empty: image_dir or TFDS.
  config.data.builtin = ''
  config.data.cache_dir = '~/.cache/cyclegan_jax'
  config.data.load_size = 286
  config.data.crop_size = 256
  # resize_and_crop | crop | scale_width | scale_width_and_crop | none
  config.data.preprocess = 'resize_and_crop'
  config.data.flip = True
  # The pixel values that map to [-1, 1]: () for the full range of each file's
  # pixel type (8-bit 0-255, 16-bit 0-65535, signed 16-bit -32768-32767,
  # float 0-1), or (low, high), e.g. (-1024, 3071) for CT in Hounsfield units.
  # A pixel outside it is an error naming the file.
  config.data.value_range = ()
  config.data.num_workers = 4  # Threads decoding and augmenting images.
  # A sweep's runs share one store of decoded images resized to load_size, of
  # at most this many MiB (least recently used dropped first); 0: each run
  # decodes its own. A single run decodes as it reads.
  config.data.decoded_cache_mb = 2048
  # False: a corrupt or unreadable training image stops training with its name.
  # True: it is replaced by another image of its domain and counted in the log.
  config.data.skip_bad_images = False

  config.model = ml_collections.ConfigDict()
  # cyclegan (unpaired) | pix2pix (paired; configs/pix2pix.py) | cut (unpaired,
  # one-sided; configs/cut.py and configs/fastcut.py)
  config.model.kind = 'cyclegan'
  # resnet_9blocks | resnet_6blocks | resnet_<N>blocks | unet_256 | unet_128
  config.model.generator = 'resnet_9blocks'
  config.model.discriminator = 'basic'  # basic (70x70 PatchGAN) | n_layers | pixel
  config.model.n_layers_d = 3  # Only for discriminator='n_layers'.
  # Channels of domain A (a pix2pix model's input) and of domain B (its
  # output): 1 for grayscale; images are converted to them as they are read.
  config.model.input_nc = 3
  config.model.output_nc = 3
  config.model.ngf = 64
  config.model.ndf = 64
  config.model.norm = 'instance'  # instance | batch (batch: statistics of the batch, always)
  config.model.dropout = False  # Official cycle_gan default: --no_dropout.
  config.model.dropout_at_test = False  # Keep dropout on when translating (pix2pix does).
  # float32 | bfloat16: the dtype of activations and convolutions. Parameters,
  # optimiser state, losses and instance-norm statistics stay float32.
  config.model.dtype = 'float32'
  # True: recompute each residual block of a resnet generator in the backward
  # pass instead of storing its activations (jax.checkpoint): less memory for
  # large images, a slower step. Results equal to float rounding.
  config.model.remat = False
  # The precision of float32 convolutions and matmuls on accelerators:
  # default (each platform's fast path: TF32 on NVIDIA GPUs from Ampere on,
  # one bfloat16 pass on TPUs; CPUs compute float32 either way) | highest
  # (float32 arithmetic everywhere, slower). docs/reproducibility.md.
  config.model.precision = 'default'
  # Weight init: normal (N(0, 0.02), the official CycleGAN/pix2pix) | xavier
  # (xavier_normal gain 0.02, CUT's). Biases start at 0 either way.
  config.model.init = 'normal'
  # CUT's antialiased sampling (resnet generators and PatchGAN discriminators):
  # stride-1 convs then a [1, 2, 1] blur-downsample instead of stride-2 convs,
  # and (antialias_up) bilinear upsampling then a conv instead of transposed convs.
  config.model.antialias = False
  config.model.antialias_up = False

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 1  # Global: split over every device of every host.
  config.train.n_epochs = 100  # Epochs at the initial learning rate...
  config.train.n_epochs_decay = 100  # ...then epochs decaying linearly to zero.
  config.train.num_steps = 0  # > 0: total steps, first half constant, second half decaying.
  config.train.lr = 2e-4
  config.train.beta1 = 0.5
  config.train.beta2 = 0.999
  config.train.gan_mode = 'lsgan'  # lsgan | vanilla | wgangp
  config.train.lambda_gp = 10.0  # Gradient-penalty weight, wgangp only.
  # How a sweep's runs on one device execute (docs/sweeps.md): 'vmap' (one
  # batched program, the accelerators' form), 'loop' (one after the other,
  # each run the program it is alone) or 'auto' (loop on CPU, else vmap).
  config.train.sweep_step = 'auto'

  config.log_every_steps = 100
  config.sample_every_steps = 1000
  config.num_samples = 4  # Test images per domain in each sample grid.
  config.checkpoint_every_steps = 5000
  # > 0: a jax.profiler trace of this many steps, from step 10 on (after
  # compilation), into workdir/plugins/profile for TensorBoard's profiler.
  config.profile_steps = 0
  config.keep_checkpoints = 3

  config.eval = ml_collections.ConfigDict()
  # FID/KID of the test-split translations (both directions) against the real
  # test images, with pytorch-fid's Inception-v3. A weights file written by
  # `python -m cyclegan_jax.inception_weights` (docs/evaluation.md); empty: no FID.
  config.eval.inception_weights = ''
  # legacy: pytorch-fid's preprocessing (bilinear resize to 299, no antialias);
  # clean: clean-fid's (PIL bicubic with antialias). docs/evaluation.md.
  config.eval.fid_mode = 'legacy'
  config.eval.every_steps = 0  # > 0: evaluate during training too, keeping the best step.
  config.eval.num_images = 0  # Test images per domain; 0: all of them.
  config.eval.batch_size = 50  # Images per Inception forward pass.
  config.eval.kid_subsets = 100  # KID: mean and std over this many random subsets...
  config.eval.kid_subset_size = 1000  # ...of min(this, n_real, n_fake) images each.
  for family in families.FAMILIES.values():
    family.add_config_fields(config)
  # Runs trained side by side (docs/sweeps.md): per sweepable field, a tuple
  # of values; all empty: one run.
  sweeps.add_config_fields(config)
  return config


def _merge(config: ml_collections.ConfigDict, stored: dict) -> None:
  for key, value in stored.items():
    if isinstance(value, dict) and isinstance(config.get(key), ml_collections.ConfigDict):
      _merge(config[key], value)
    elif isinstance(value, list) and isinstance(config.get(key), tuple):
      config[key] = tuple(value)  # JSON keeps tuples as lists.
    else:  # As stored (a field today's defaults lack too: kept, unread).
      if isinstance(config.get(key), float) and isinstance(value, int):
        value = float(value)
      with config.ignore_type():
        config[key] = value


def upgrade(stored: dict) -> ml_collections.ConfigDict:
  """A stored config (a dict, as config.json holds it) as a full config of
  today's fields: today's defaults, the stored config's FORMER_DEFAULTS for
  fields it lacks, then its own values."""
  config = defaults()
  for name, value in FORMER_DEFAULTS.items():
    *groups, last = name.split('.')
    node = stored
    for group in groups:
      node = node.get(group, {})
    if last not in node:
      _merge(config, _nested(name, value))
  _merge(config, stored)
  return config


def _nested(name: str, value) -> dict:
  for part in reversed(name.split('.')):
    value = {part: value}
  return value


def load(workdir: str) -> ml_collections.ConfigDict:
  """workdir/config.json, upgraded."""
  path = storage.join(workdir, checkpoints.CONFIG_FILE)
  if not storage.isfile(path):
    raise FileNotFoundError(f'{path}: not found; expected the config.json that training '
                            'writes into its workdir')
  try:
    stored = json.loads(storage.read_text(path))
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: not valid JSON ({e})') from None
  if not isinstance(stored, dict):
    raise ValueError(f'{path}: expected a JSON object of config fields')
  return upgrade(stored)
