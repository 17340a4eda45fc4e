"""cyclegan_jax command line: train (default), evaluate, write the test results page,
translate images or a video, export generators as ONNX, or import official PyTorch
generators.

  python main.py --config=configs/horse2zebra.py --workdir=runs/h2z
  python main.py ... --coordinator_address=HOST:PORT --num_processes=N --process_id=I
  python main.py --mode=test --workdir=runs/h2z [--num_test=50]
  python main.py --mode=evaluate --workdir=runs/h2z [--step=N] [--fid_mode=clean]
  python main.py --mode=import_torch --config=configs/horse2zebra.py --workdir=runs/official \
      --torch_checkpoint=latest_net_G_A.pth [--torch_checkpoint_b=latest_net_G_B.pth]
  python main.py --mode=translate --workdir=runs/h2z --input=DIR --output=DIR --direction=AtoB
  python main.py --mode=translate --workdir=runs/h2z --input=clip.mp4 --output=out.mp4
  python main.py --mode=translate --workdir=runs/unsb ... [--nfe=N] [--seed=S]   (UNSB)
  python main.py --mode=export --workdir=runs/h2z --output=DIR [--direction=AtoB|BtoA|both] \
      [--export_tiles]
  python main.py --mode=extract --workdir=runs/sweep --run=NAME|INDEX --output=DIR
  python main.py --mode=report --workdirs=runs/h2z,runs/h2z_cut --output=DIR
  python main.py --mode=demo --workdir=runs/h2z [--workdirs=W1,W2] [--port=7860] \
      [--demo_buckets=64]
"""

import contextlib
import importlib.util
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from cyclegan_jax import console
from cyclegan_jax import deterministic_ops
from cyclegan_jax import distributed
from cyclegan_jax import evaluate
from cyclegan_jax import extract
from cyclegan_jax import report
from cyclegan_jax import results_page
from cyclegan_jax import storage
from cyclegan_jax import sweeps
from cyclegan_jax import train
from cyclegan_jax import translate
from cyclegan_jax import video
from cyclegan_jax import workdir_lock
from cyclegan_jax import xla_cpu_options

FLAGS = flags.FLAGS
flags.DEFINE_enum('mode', 'train',
                  ['train', 'evaluate', 'test', 'translate', 'export', 'import_torch',
                   'extract', 'report', 'demo'],
                  'What to do: train; FID/KID of the test split; write the test results '
                  'page; translate a folder or a video; write ONNX files of the generators; '
                  'make a workdir from official PyTorch generator checkpoints; write one '
                  'run of a sweep as an ordinary workdir; or write one report across '
                  'workdirs (--workdirs); or serve a page to try the models (demo).')
flags.DEFINE_string('workdir', None, 'Folder for checkpoints, logs and samples.')
config_flags.DEFINE_config_file('config', None, 'Training configuration file.',
                                lock_config=True)
flags.DEFINE_string('input', None, 'translate: a folder of images, or a video file.')
flags.DEFINE_string('output', None, 'translate: folder for the translated images, or the '
                    'video file to write (.mkv: lossless FFV1; .mp4/.mov/.m4v/.avi: H.264); '
                    'export: folder for the .onnx and .json files.')
flags.DEFINE_enum('output_format', None, ['png', 'tiff'], 'translate: the format of every '
                  'output; default: TIFF for TIFF inputs, PNG for the others (8- or 16-bit '
                  'as the input).')
flags.DEFINE_enum('direction', None, ['AtoB', 'BtoA', 'both'], 'translate: which generator '
                  '(default: AtoB, or the direction a pix2pix model was trained for); '
                  'export: AtoB, BtoA or both (default: every generator the model has).')
flags.DEFINE_integer('batch_size', 8, 'translate a video: frames per call of the generator '
                     '(fewer where they would not fit in memory; 1 for batch norm and test-time '
                     'dropout).')
flags.DEFINE_integer('tile', None, 'translate: run the generator on tiles of this many pixels '
                     '(images and video frames), in memory set by the tile, with the whole '
                     "image's normalisation statistics (docs/translation.md). Without it, an "
                     'image that does not fit in memory whole is tiled automatically.')
flags.DEFINE_enum('tile_stats', 'exact', ['exact', 'thumbnail'], 'translate with tiles: exact '
                  '(whole-image statistics, one pass over the tiles per normalisation layer) or '
                  'thumbnail (approximate: statistics of a 512-pixel thumbnail, one pass).')
flags.DEFINE_bool('dropout_at_test', None, 'export: false exports a generator trained with '
                  'test-time dropout (pix2pix) without it, as the official test.py --eval '
                  'runs it; ONNX files cannot hold its JAX dropout masks.')
flags.DEFINE_bool('export_tiles', False, 'export: also write <direction>.tile.onnx and '
                  '<direction>.statistics.onnx, to translate images of any size tile by tile '
                  'with ONNX Runtime (docs/export.md).')
flags.DEFINE_string('run', None, 'evaluate, test, translate, export, extract: the run of a '
                    'sweep\'s workdir, by name (seed=1,lambda_cycle=5.0) or index '
                    '(docs/sweeps.md).')
flags.DEFINE_integer('step', None,
                     'evaluate, test, translate, export: checkpoint step (default: the '
                     'latest).')
flags.DEFINE_integer('nfe', None, 'translate, test, evaluate: the steps a model that '
                     'translates in steps takes (UNSB: 1 to model.unsb_num_timesteps; default: '
                     'model.unsb_nfe, 0 meaning all; evaluate scores every one without it).')
flags.DEFINE_integer('seed', None, 'translate, test, evaluate: the noise seed of a model that '
                     'translates in steps from noise (UNSB; default 0): the same seed gives '
                     'the same images.')
flags.DEFINE_integer('num_test', 50, 'test: test images per domain on the results page.')
flags.DEFINE_string('inception_weights', None, 'evaluate: the FID Inception weights file '
                    '(default: the workdir config\'s eval.inception_weights).')
flags.DEFINE_enum('fid_mode', None, ['legacy', 'clean'], 'evaluate: legacy (pytorch-fid\'s '
                  'preprocessing) or clean (clean-fid\'s); default: the workdir config\'s '
                  'eval.fid_mode. Another mode than the config\'s writes to eval/<mode>/.')
flags.DEFINE_string('torch_checkpoint', None, 'import_torch: the official G_A (A->B) '
                    '`.pth`, a pretrained single-generator `.pth` such as horse2zebra.pth, or '
                    'a pix2pix latest_net_G.pth.')
flags.DEFINE_string('torch_checkpoint_b', None, 'import_torch: the official G_B (B->A) `.pth`.')
flags.DEFINE_bool('distributed', False,
                  'Join a multi-process run and let JAX find the cluster (TPU pod slice; '
                  'SLURM and Open MPI launches with several tasks are joined anyway).')
flags.DEFINE_string('coordinator_address', None,
                    'Multi-process: host:port of process 0, e.g. 10.0.0.1:1234.')
flags.DEFINE_integer('num_processes', None, 'Multi-process: how many processes.')
flags.DEFINE_integer('process_id', None, 'Multi-process: this process, 0 to num_processes-1.')
flags.DEFINE_list('workdirs', None, 'report: the workdirs to put side by side, separated by '
                  'commas (a sweep\'s: each of its runs); demo: more workdirs to offer '
                  'beside --workdir.')
flags.DEFINE_string('host', '127.0.0.1', 'demo: the address to serve the page on (0.0.0.0: '
                    'every interface of this machine).')
flags.DEFINE_integer('port', 7860, 'demo: the port to serve the page on.')
flags.DEFINE_string('demo_examples', None, 'demo: a folder of images offered as examples '
                    '(their sizes are compiled at start).')
flags.DEFINE_integer('demo_buckets', 0, 'demo: pad each upload (by reflection) to sides that '
                     'are multiples of N pixels, so that sizes in one bucket share one compiled '
                     'program (no compile for a new size), computed as for the image itself: '
                     'within one grey level of --mode=translate\'s PNG. 0: one program per '
                     'size, equal to translate\'s.')
flags.register_multi_flags_validator(
    ['mode', 'workdir'], lambda f: f['mode'] == 'report' or f['workdir'] is not None,
    message='--workdir is required (--mode=report takes --workdirs=W1,W2,... instead)')


def _missing_override(argv) -> str | None:
  """The first `--config.a.b=v` whose field the config file lacks, explained."""
  path = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
  if path is None:
    return None
  spec = importlib.util.spec_from_file_location('config_file', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for arg in argv:
    if not arg.startswith('--config.'):
      continue
    name = arg[len('--config.'):].split('=', 1)[0]
    if name.startswith('sweep.') and name[len('sweep.'):] not in sweeps.sweepable():
      return (f'--config.{name}: config.{name[len("sweep."):]} cannot be swept (a field that '
              'changes shapes or the program, or no field at all); a sweep varies '
              f'{", ".join(sweeps.sweepable())}')
    node, parts = config, name.split('.')
    for i, part in enumerate(parts):
      where = 'config' + ''.join('.' + p for p in parts[:i])
      if not hasattr(node, 'keys'):
        return f'--config.{name}: {where} is a {type(node).__name__}, not a group of fields'
      if part not in node:
        return (f'--config.{name}: {where} has no field {part!r} '
                f'(its fields: {", ".join(sorted(node.keys()))})')
      node = node[part]
  return None


def _parse_flags(argv):
  """absl's flag parsing, with every flag or config error on one line."""
  path = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), '?')
  try:
    rest = FLAGS(argv)
    if FLAGS.config is not None:
      FLAGS.config.keys()  # A config file that failed to load raises only when used.
    return rest
  except flags.Error as e:
    _fail(str(e), status=2)
  except (AttributeError, KeyError, TypeError) as e:  # An override names a missing field?
    missing = None
    with contextlib.suppress(Exception):
      missing = _missing_override(argv)
    _fail(missing or f'--config={path}: {type(e).__name__}: {e}', status=2)
  except Exception as e:  # pylint: disable=broad-except  # Whatever the config file raised.
    _fail(f'--config={path}: cannot load this config file '
          f'({str(e).strip().splitlines()[-1].strip()})', status=2)


def _fail(message: str, status: int = 1):
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(status)


def main(argv):
  if len(argv) > 1:
    _fail(f'unexpected arguments: {" ".join(argv[1:])}', status=2)
  xla_cpu_options.set_defaults()  # Before JAX starts its backend.
  # Training with config.deterministic: XLA's deterministic GPU ops, likewise.
  deterministic_ops.set_flag(FLAGS.mode == 'train' and FLAGS.config is not None
                             and FLAGS.config.deterministic)
  # A quiet terminal unless --verbosity asks for INFO (0) or DEBUG (1).
  console.quiet_terminal(verbose=FLAGS['verbosity'].present and FLAGS.verbosity >= 0)
  try:
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                           force=FLAGS.distributed)
    for name in ('nfe', 'seed'):
      if FLAGS[name].value is not None and FLAGS.mode not in ('translate', 'test', 'evaluate'):
        _fail(f'--{name} is for --mode=translate, test or evaluate (a translation\'s steps and '
              f'noise){"; the training seed is --config.seed" if name == "seed" else ""}',
              status=2)
    if FLAGS.mode == 'train':
      if FLAGS.config is None:
        _fail('--config is required to train, e.g. --config=configs/horse2zebra.py', status=2)
      for arg in sys.argv[1:]:  # An empty tuple would silently mean "not swept".
        name = arg.split('=', 1)[0][len('--config.'):]
        if arg.startswith('--config.sweep.') and not sweeps.swept(FLAGS.config).get(
            name[len('sweep.'):]):
          _fail(f'{arg}: an empty sweep; give the values to sweep, e.g. '
                f"--config.{name}='(0,1)'", status=2)
      train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    elif FLAGS.mode == 'evaluate':
      evaluate.evaluate_workdir(FLAGS.workdir, FLAGS.step, FLAGS.inception_weights, FLAGS.run,
                                FLAGS.fid_mode, FLAGS.nfe, FLAGS.seed)
    elif FLAGS.mode == 'import_torch':
      if FLAGS.config is None or not FLAGS.torch_checkpoint:
        _fail('--mode=import_torch needs --config=FILE (the architecture) and '
              '--torch_checkpoint=PATH', status=2)
      # Imported here: torch is an optional extra that only this mode needs.
      from cyclegan_jax import torch_import  # pylint: disable=import-outside-toplevel
      torch_import.import_torch_checkpoints(FLAGS.config, FLAGS.workdir, FLAGS.torch_checkpoint,
                                            FLAGS.torch_checkpoint_b)
    elif FLAGS.mode == 'export':
      if not FLAGS.output:
        _fail('--mode=export needs --output=DIR', status=2)
      # Imported here: jax2onnx and onnx are an optional extra that only export needs.
      from cyclegan_jax import export  # pylint: disable=import-outside-toplevel
      for path in export.export_workdir(FLAGS.workdir, FLAGS.output, FLAGS.direction,
                                        FLAGS.step, FLAGS.dropout_at_test, FLAGS.run,
                                        FLAGS.export_tiles):
        print(f'Wrote {path}', flush=True)
    elif FLAGS.mode == 'extract':
      if not FLAGS.output:
        _fail('--mode=extract needs --run=NAME|INDEX and --output=DIR (a new workdir)', status=2)
      print(extract.extract_run(FLAGS.workdir, FLAGS.run, FLAGS.output, FLAGS.step), flush=True)
    elif FLAGS.mode == 'report':
      if not FLAGS.workdirs or not FLAGS.output:
        _fail('--mode=report needs --workdirs=W1,W2,... and --output=DIR', status=2)
      print(f'Wrote {report.write_report(FLAGS.workdirs, FLAGS.output)}', flush=True)
    elif FLAGS.mode == 'demo':
      # Imported here: gradio is an optional extra (`demo`) that only this mode needs.
      try:
        from cyclegan_jax import demo  # pylint: disable=import-outside-toplevel
      except ModuleNotFoundError as e:
        raise ImportError(f'--mode=demo needs gradio ({e}); install the demo extra: '
                          'pip install -e ".[demo]"') from None
      workdirs = list(dict.fromkeys([FLAGS.workdir, *(FLAGS.workdirs or [])]))
      demo.serve(workdirs, FLAGS.host, FLAGS.port, FLAGS.demo_examples,
                 buckets=FLAGS.demo_buckets)
    elif FLAGS.mode == 'test':
      page = results_page.write_results_page(FLAGS.workdir, FLAGS.num_test, FLAGS.step,
                                             FLAGS.run, FLAGS.nfe, FLAGS.seed)
      print(f'Wrote {page}', flush=True)
    else:
      if not FLAGS.input or not FLAGS.output:
        _fail('--mode=translate needs --input=DIR and --output=DIR (or --input=VIDEO and '
              '--output=VIDEO)', status=2)
      if FLAGS.direction == 'both':
        _fail('--direction=both is for --mode=export; translate takes AtoB or BtoA', status=2)
      if storage.isfile(FLAGS.input):
        if not video.is_video(FLAGS.input):
          _fail(f'--input={FLAGS.input}: expected a folder of images or a video '
                f'({", ".join(video.VIDEO_EXTENSIONS)})', status=2)
        frames = video.translate_video(FLAGS.workdir, FLAGS.input, FLAGS.output,
                                       FLAGS.direction, FLAGS.step, FLAGS.batch_size,
                                       FLAGS.tile, FLAGS.tile_stats, FLAGS.run, FLAGS.nfe,
                                       FLAGS.seed)
        print(f'Wrote {FLAGS.output} ({frames} frames)', flush=True)
      else:
        written = translate.translate_folder(FLAGS.workdir, FLAGS.input, FLAGS.output,
                                             FLAGS.direction, FLAGS.step, FLAGS.output_format,
                                             FLAGS.tile, FLAGS.tile_stats, FLAGS.run, FLAGS.nfe,
                                             FLAGS.seed)
        logging.info('Wrote %d images to %s', len(written), FLAGS.output)
  # What the library raises for bad input, bad data, a full disk, a NaN, a
  # missing optional package (torch, jax2onnx, imageio), a workdir another
  # trainer holds or a program larger than the memory
  # (memory.InsufficientMemoryError): one line, no traceback. Anything else is
  # a bug and keeps its traceback.
  except (ValueError, OSError, FloatingPointError, ImportError, MemoryError,
          workdir_lock.WorkdirBusyError) as e:
    _fail(str(e))


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
