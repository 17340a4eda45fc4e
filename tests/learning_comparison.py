"""The learning test's task (tests/test_learning.py) for CycleGAN, CUT,
FastCUT and UNSB side by side: the A->B error on held-out images after a number of
steps, and the training time. Prints one JSON line per run; README's table
comes from it (equal wall time: each kind's steps chosen from the times of
an equal-steps run).

  python -m tests.learning_comparison --steps=300 [--kinds=cyclegan,cut,fastcut,unsb]
"""

import argparse
import json
import tempfile
import time

import numpy as np

from configs import tiny
from configs import tiny_cut
from configs import tiny_unsb
from cyclegan_jax import generation
from cyclegan_jax import families
from cyclegan_jax.data import input_pipeline
from cyclegan_jax import train
from cyclegan_jax import xla_cpu_options
from tests import synthetic


def tiny_config(kind: str):
  """tiny.py / tiny_cut.py / tiny_unsb.py; FastCUT is tiny CUT with
  configs/fastcut.py's changes."""
  if kind == 'cyclegan':
    return tiny.get_config()
  if kind == 'unsb':
    return tiny_unsb.get_config()
  config = tiny_cut.get_config()
  if kind == 'fastcut':
    config.train.nce_idt = False
    config.train.lambda_nce = 10.0
    config.train.flip_equivariance = True
  return config


def ab_error(config, state, root: str) -> tuple[float, float]:
  """(mean absolute A->B error of the held-out A images against their true B
  translations, the same for leaving them unchanged), in 8-bit levels."""
  source = input_pipeline.FolderSource(f'{root}/testA')
  test_a = np.stack([source[i] for i in range(len(source))])
  network = 'gen_ab' if config.model.kind == 'cyclegan' else 'gen'
  generator = families.for_model(config.model).create_generators(config.model)[network]
  params = getattr(state, network).params
  translated = np.stack([generation.translate_image(generator, params, x)
                         for x in test_a]).astype(np.float32)
  truth = synthetic.to_b(test_a).astype(np.float32)
  return (float(np.abs(translated - truth).mean()),
          float(np.abs(test_a.astype(np.float32) - truth).mean()))


def run(kind: str, root: str, steps: int, workdir: str) -> dict:
  config = tiny_config(kind)
  config.data.image_dir = root
  config.train.num_steps = steps
  config.log_every_steps = max(steps, 1)
  config.sample_every_steps = config.checkpoint_every_steps = 10 * steps
  start = time.perf_counter()
  state = train.train_and_evaluate(config, workdir)
  seconds = time.perf_counter() - start
  error, do_nothing = ab_error(config, state, root)
  return {'kind': kind, 'steps': steps, 'train_seconds': round(seconds, 1),
          'error': round(error, 2), 'do_nothing': round(do_nothing, 2),
          'ratio': round(error / do_nothing, 3)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--kinds', default='cyclegan,cut,fastcut')
  parser.add_argument('--steps', type=int, default=300)
  args = parser.parse_args()
  xla_cpu_options.set_defaults()
  with tempfile.TemporaryDirectory() as tmp:
    root = synthetic.make_unpaired_folder(f'{tmp}/data', n_train=64, n_test=16)
    for kind in args.kinds.split(','):
      print(json.dumps(run(kind, root, args.steps, f'{tmp}/{kind}')), flush=True)


if __name__ == '__main__':
  main()
