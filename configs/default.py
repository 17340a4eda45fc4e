"""Default CycleGAN configuration: the official defaults of
junyanz/pytorch-CycleGAN-and-pix2pix (train options for `--model cycle_gan`)."""

import ml_collections


def get_config(tfds_name: str = 'cycle_gan/horse2zebra') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

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
  # False: a corrupt or unreadable training image stops training with its name.
  # True: it is replaced by another image of its domain and counted in the log.
  config.data.skip_bad_images = False
  # pix2pix: AtoB translates the A images (left halves) into the B images, BtoA back.
  config.data.direction = 'AtoB'

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
  # Weight init: normal (N(0, 0.02), the official CycleGAN/pix2pix) | xavier
  # (xavier_normal gain 0.02, CUT's). Biases start at 0 either way.
  config.model.init = 'normal'
  # CUT's antialiased sampling (resnet generators and PatchGAN discriminators):
  # stride-1 convs then a [1, 2, 1] blur-downsample instead of stride-2 convs,
  # and (antialias_up) bilinear upsampling then a conv instead of transposed convs.
  config.model.antialias = False
  config.model.antialias_up = False
  config.model.netf_nc = 256  # CUT only: width of F, the MLP head on sampled patches.

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
  config.train.lambda_cycle = 10.0  # lambda_A = lambda_B in the official code.
  config.train.lambda_identity = 0.5  # Identity loss = lambda_identity * lambda_cycle * L1.
  config.train.pool_size = 50  # Per device; 0 turns the history pool off.
  config.train.lambda_l1 = 100.0  # pix2pix only: weight of |G(x) - y|.
  # CUT only (configs/cut.py): G's loss is lambda_gan * GAN + lambda_nce * PatchNCE
  # (the mean over nce_layers, the generator's layers counted as the official
  # nn.Sequential; num_patches per image and layer; temperature nce_t), with
  # nce_idt the identity term PatchNCE(b, G(b)) too, averaged with it;
  # flip_equivariance (FastCUT) flips G's input left-right half of the time.
  config.train.lambda_gan = 1.0
  config.train.lambda_nce = 1.0
  config.train.nce_idt = True
  config.train.nce_layers = (0, 4, 8, 12, 16)
  config.train.num_patches = 256
  config.train.nce_t = 0.07
  config.train.flip_equivariance = False

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
  # `python -m cyclegan_jax.inception_weights` (see README); empty: no FID.
  config.eval.inception_weights = ''
  config.eval.every_steps = 0  # > 0: evaluate during training too, keeping the best step.
  config.eval.num_images = 0  # Test images per domain; 0: all of them.
  config.eval.batch_size = 50  # Images per Inception forward pass.
  config.eval.kid_subsets = 100  # KID: mean and std over this many random subsets...
  config.eval.kid_subset_size = 1000  # ...of min(this, n_real, n_fake) images each.
  return config
