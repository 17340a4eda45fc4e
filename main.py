"""cyclegan_jax command line: train (default) or translate.

  python main.py --config=configs/horse2zebra.py --workdir=runs/h2z
  python main.py --mode=translate --workdir=runs/h2z --input=DIR --output=DIR --direction=AtoB
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

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
flags.mark_flag_as_required('workdir')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
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
