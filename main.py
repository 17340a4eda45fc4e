"""cyclegan_jax command line: train (default) or translate.

  python main.py --config=configs/horse2zebra.py --workdir=runs/h2z
  python main.py ... --coordinator_address=HOST:PORT --num_processes=N --process_id=I
  python main.py --mode=translate --workdir=runs/h2z --input=DIR --output=DIR --direction=AtoB
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from cyclegan_jax import distributed
from cyclegan_jax import train
from cyclegan_jax import translate

FLAGS = flags.FLAGS
flags.DEFINE_enum('mode', 'train', ['train', 'translate'], 'What to do.')
flags.DEFINE_string('workdir', None, 'Folder for checkpoints, logs and samples.')
config_flags.DEFINE_config_file('config', None, 'Training configuration file.',
                                lock_config=True)
flags.DEFINE_string('input', None, 'translate: folder of images to translate.')
flags.DEFINE_string('output', None, 'translate: folder for the translated PNGs.')
flags.DEFINE_enum('direction', 'AtoB', ['AtoB', 'BtoA'], 'translate: which generator.')
flags.DEFINE_integer('step', None, 'translate: checkpoint step (default: the latest).')
flags.DEFINE_bool('distributed', False,
                  'Join a multi-process run and let JAX find the cluster (TPU pod slice; '
                  'SLURM and Open MPI launches with several tasks are joined anyway).')
flags.DEFINE_string('coordinator_address', None,
                    'Multi-process: host:port of process 0, e.g. 10.0.0.1:1234.')
flags.DEFINE_integer('num_processes', None, 'Multi-process: how many processes.')
flags.DEFINE_integer('process_id', None, 'Multi-process: this process, 0 to num_processes-1.')
flags.mark_flag_as_required('workdir')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  try:
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                           force=FLAGS.distributed)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  if FLAGS.mode == 'train':
    if FLAGS.config is None:
      raise app.UsageError('--config is required to train, e.g. --config=configs/horse2zebra.py')
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  else:
    if not FLAGS.input or not FLAGS.output:
      raise app.UsageError('--mode=translate needs --input=DIR and --output=DIR')
    written = translate.translate_folder(FLAGS.workdir, FLAGS.input, FLAGS.output,
                                         FLAGS.direction, FLAGS.step)
    logging.info('Wrote %d images to %s', len(written), FLAGS.output)


if __name__ == '__main__':
  app.run(main)
