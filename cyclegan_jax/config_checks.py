"""Checks a training config before anything is loaded or compiled, so that a
typo costs a one-line error naming the field rather than a traceback (or a
run that trains something else than intended)."""

from cyclegan_jax import config_fields
from cyclegan_jax import families
from cyclegan_jax import inception
from cyclegan_jax import losses
from cyclegan_jax import models
from cyclegan_jax import sweeps
from cyclegan_jax.data import input_pipeline

field, require, one_of = config_fields.field, config_fields.require, config_fields.one_of


def check_global_batch(batch_size: int, num_devices: int) -> None:
  """Each device takes an equal share of the global batch."""
  if batch_size % num_devices:
    raise ValueError(f'config.train.batch_size={batch_size} is not divisible by the '
                     f'{num_devices} devices; use a multiple of {num_devices}')


SWEEP_STEP_FORMS = ('auto', 'vmap', 'loop')  # config.train.sweep_step


def validate(config, num_devices: int, process_count: int = 1) -> None:
  """Raises ValueError naming the first field with an impossible value (of a
  sweep: of its definition, then of each run's config on its devices)."""
  one_of(config, 'train.sweep_step', SWEEP_STEP_FORMS)
  if sweeps.is_sweep(config):
    sweeps.check(config)
    num_runs = len(sweeps.runs(config))
    _, data_devices = sweeps.mesh_shape(num_runs, num_devices)
    local_devices = num_devices // process_count
    if data_devices > local_devices:
      raise ValueError(
          f'config.sweep: {num_runs} runs on {num_devices} devices give each run '
          f'{data_devices} devices, more than the {local_devices} of one process; each run of '
          f'a multi-process sweep trains within one process: sweep at least '
          f'{num_devices // local_devices} runs, or train on fewer processes')
    for run in sweeps.runs(config):
      try:
        _validate_one(sweeps.run_config(config, run), data_devices)
      except ValueError as e:
        raise ValueError(f'run {run.index} ({run.name}): {e}') from None
    return
  _validate_one(config, num_devices)


def _validate_one(config, num_devices: int) -> None:
  is_int = lambda name: config_fields.is_int(field(config, name))
  number = lambda name: config_fields.is_number(field(config, name))
  at_least = lambda name, low, kind='an integer': config_fields.at_least(config, name, low, kind)

  # Model: the constructors name an unknown generator, discriminator, norm or dtype.
  one_of(config, 'model.kind', families.kinds())
  generator = models.create_generator(config.model)
  models.create_discriminator(config.model)
  for name in ('model.ngf', 'model.ndf', 'model.n_layers_d', 'model.input_nc',
               'model.output_nc'):
    at_least(name, 1)

  # Data.
  data = config.data
  one_of(config, 'data.preprocess', input_pipeline.PREPROCESS_MODES)
  at_least('data.crop_size', 4)
  at_least('data.load_size', 4)
  at_least('data.num_workers', 0)
  at_least('data.decoded_cache_mb', 0)
  value_range = tuple(data.value_range)
  require(value_range == () or (
      len(value_range) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                    for v in value_range) and value_range[0] < value_range[1]),
          config, 'data.value_range', '() for the full range of each file\'s pixel type, or '
          '(low, high) with low < high')
  if data.preprocess in ('resize_and_crop', 'scale_width_and_crop'):
    require(data.crop_size <= data.load_size, config, 'data.crop_size',
            f'<= config.data.load_size={data.load_size} (images are resized to load_size, '
            'then cropped)')
  multiple = models.generator_multiple(generator)
  if data.preprocess in ('resize_and_crop', 'crop', 'scale_width_and_crop'):
    require(data.crop_size % multiple == 0, config, 'data.crop_size',
            f'a multiple of {multiple} for model.generator={config.model.generator!r}')

  # Training.
  t = config.train
  at_least('train.batch_size', 1)
  check_global_batch(t.batch_size, num_devices)
  for name in ('train.n_epochs', 'train.n_epochs_decay', 'train.num_steps'):
    at_least(name, 0)
  if t.num_steps == 0 and t.n_epochs + t.n_epochs_decay == 0:
    raise ValueError('config.train: n_epochs + n_epochs_decay = 0 and num_steps = 0; '
                     'expected some training')
  require(number('train.lr') and t.lr > 0, config, 'train.lr', 'a number > 0')
  for name in ('train.beta1', 'train.beta2'):
    require(number(name) and 0 <= field(config, name) < 1, config, name,
            'a number in [0, 1)')
  one_of(config, 'train.gan_mode', losses.GAN_MODES)
  at_least('train.lambda_gp', 0, kind='a number')
  # Every family's fields (every config holds them), then what the family
  # trained needs: its data (paired or not), its losses' conditions.
  for family in families.FAMILIES.values():
    family.check_fields(config)
  families.get(config).check_config(config)

  # Loop.
  for name in ('log_every_steps', 'sample_every_steps', 'checkpoint_every_steps'):
    at_least(name, 1)
  at_least('num_samples', 1)
  for name in ('keep_checkpoints', 'profile_steps'):
    at_least(name, 0)
  require(is_int('seed'), config, 'seed', 'an integer')
  require(isinstance(config.deterministic, bool), config, 'deterministic', 'True or False')

  # Evaluation (FID/KID).
  for name in ('eval.every_steps', 'eval.num_images'):
    at_least(name, 0)
  for name in ('eval.batch_size', 'eval.kid_subsets'):
    at_least(name, 1)
  at_least('eval.kid_subset_size', 2)
  one_of(config, 'eval.fid_mode', inception.FID_MODES)
  if config.eval.every_steps > 0:
    require(bool(config.eval.inception_weights), config, 'eval.inception_weights',
            'a weights file when config.eval.every_steps > 0 (write one with python -m '
            'cyclegan_jax.inception_weights, see docs/evaluation.md)')


# Fields that fix the shapes of the saved state: a checkpoint cannot be
# resumed with other values. With them, each family's SHAPE_FIELDS.
SHAPE_FIELDS = ('model.kind', 'model.norm', 'model.generator', 'model.discriminator',
                'model.n_layers_d', 'model.ngf', 'model.ndf', 'model.input_nc',
                'model.output_nc', 'data.crop_size', 'data.preprocess', 'model.antialias',
                'model.antialias_up')


def shape_fields() -> tuple[str, ...]:
  return SHAPE_FIELDS + tuple(name for family in families.FAMILIES.values()
                              for name in family.SHAPE_FIELDS)


def check_resumable(stored, config, workdir: str) -> None:
  """Refuses to resume a workdir trained with another model shape (`stored`:
  its config, as configuration.load reads it)."""
  differ = [f'{name}: {field(stored, name)!r} there, {field(config, name)!r} now'
            for name in shape_fields() if field(stored, name) != field(config, name)]
  runs_there = [run.name for run in sweeps.runs(stored)]
  runs_now = [run.name for run in sweeps.runs(config)]
  if runs_there != runs_now:
    describe = lambda names: f'the runs {", ".join(names)}' if names else 'one run (no sweep)'
    raise ValueError(f'{workdir} holds checkpoints of {describe(runs_there)}, and the config '
                     f'now trains {describe(runs_now)}; use the same config.sweep to resume, or '
                     'another --workdir')
  if differ:
    raise ValueError(f'{workdir} holds checkpoints of another model shape ({"; ".join(differ)}); '
                     'use another --workdir, or the same values to resume')
