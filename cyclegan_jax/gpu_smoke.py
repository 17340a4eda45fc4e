"""The checks a lent GPU runs in one call (docs/reproducibility.md#platforms):

  python -m cyclegan_jax.gpu_smoke --workdir=/tmp/smoke [--steps=20] \
      [--benchmark=gpu|tiny|none]

1. Trains configs/tiny.py on the quick start's data twice from scratch, each
   in a fresh `main.py` process with config.deterministic (main.py sets XLA's
   deterministic GPU ops), and compares the two final checkpoints bit for bit.
2. Translates the quick start's test images with that checkpoint on this
   platform and, in a process held to the CPU (JAX_PLATFORMS=cpu), on the
   CPU; the two must agree within 1 grey level (the platforms' convolutions
   sum in other orders, and a GPU's default precision is TF32).
3. Runs the benchmark (`python -m cyclegan_jax.benchmark`) for each row of
   --benchmark and prints its JSON line: `gpu` the rows docs/performance.md
   asks of a GPU (CycleGAN at 256 px, batch 1 and 4, float32 and bfloat16,
   and translation at batch 8), `tiny` one short row of the tiny config (what
   the tests run on a CPU), `none` nothing.

One line per check as it ends, then one JSON line with everything; exit
status 1 when a check fails. Every process it starts inherits this one's
environment (XLA_FLAGS, JAX_PLATFORMS), so the same command runs on a CPU.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
from PIL import Image

from cyclegan_jax import checkpoints
from cyclegan_jax import console

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (what, benchmark arguments): docs/performance.md#gpus.
BENCHMARKS = {
    'gpu': [(f'CycleGAN 256 px, batch {batch}, {dtype}',
             ['--config=configs/horse2zebra.py', f'--config.train.batch_size={batch}',
              f'--config.model.dtype={dtype}', '--steps=20', '--warmup=3'])
            for batch in (1, 4) for dtype in ('float32', 'bfloat16')] + [
                ('translate 256 px, batch 8, float32',
                 ['--config=configs/horse2zebra.py', '--task=translate',
                  '--config.train.batch_size=8', '--steps=20', '--warmup=3'])],
    'tiny': [('tiny config, batch 1', ['--config=configs/tiny.py', '--steps=3', '--warmup=1'])],
    'none': [],
}


def _run(args: list[str], environ: dict | None = None) -> str:
  """Runs a Python command in the repository; its stdout, or a RuntimeError
  with the end of its output."""
  result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(environ or {})})
  if result.returncode:
    raise RuntimeError(f'{" ".join(args[:3])} ... failed ({result.returncode}): '
                       f'{(result.stderr or result.stdout)[-2000:]}')
  return result.stdout


def _train(workdir: str, data: str, steps: int) -> None:
  _run(['main.py', '--config=configs/tiny.py', f'--workdir={workdir}',
        '--config.data.builtin=skimage_dusk', f'--config.data.cache_dir={data}',
        f'--config.train.num_steps={steps}', f'--config.checkpoint_every_steps={steps}',
        '--config.sample_every_steps=1000000', '--config.deterministic=True'])


def compare_runs(first: str, second: str) -> dict:
  """Whether the two workdirs' newest checkpoints are bit-identical, and the
  largest difference of any array (0.0 when they are)."""
  (step_a, a), (step_b, b) = checkpoints.load_state(first), checkpoints.load_state(second)
  flat_a, flat_b = jax.tree.leaves(a), jax.tree.leaves(b)
  same = step_a == step_b and len(flat_a) == len(flat_b) and all(
      x.shape == y.shape and x.tobytes() == y.tobytes() for x, y in zip(flat_a, flat_b))
  largest = max((float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
                 for x, y in zip(flat_a, flat_b) if x.shape == y.shape and x.size), default=0.0)
  return {'bit_identical': bool(same), 'steps': [int(step_a), int(step_b)],
          'arrays': len(flat_a), 'max_abs_difference': largest}


def _images(folder: str) -> dict[str, np.ndarray]:
  return {name: np.asarray(Image.open(os.path.join(folder, name)), np.int16)
          for name in sorted(os.listdir(folder))}


def compare_translations(workdir: str, inputs: str, here: str, on_cpu: str) -> dict:
  """Translates `inputs` with `workdir`'s model on this platform and on the
  CPU; the largest difference in grey levels."""
  command = ['main.py', '--mode=translate', f'--workdir={workdir}', f'--input={inputs}']
  _run([*command, f'--output={here}'])
  _run([*command, f'--output={on_cpu}'], {'JAX_PLATFORMS': 'cpu'})
  a, b = _images(here), _images(on_cpu)
  if a.keys() != b.keys() or not a:
    raise RuntimeError(f'{here} and {on_cpu} hold other images: {sorted(a)}, {sorted(b)}')
  largest = max(int(np.max(np.abs(a[k] - b[k]))) for k in a)
  return {'images': len(a), 'max_grey_level_difference': largest, 'within_1': largest <= 1}


def run_benchmarks(rows) -> list[dict]:
  results = []
  for what, args in rows:
    line = _run(['-m', 'cyclegan_jax.benchmark', *args]).strip().splitlines()[-1]
    results.append({'row': what, **json.loads(line)})
    print(f'benchmark: {what}: {line}', flush=True)
  return results


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', required=True,
                      help='a new or empty folder for the runs, translations and data')
  parser.add_argument('--steps', type=int, default=20, help='train steps of each of the two runs')
  parser.add_argument('--benchmark', choices=sorted(BENCHMARKS), default='gpu',
                      help='which benchmark rows to run')
  args = parser.parse_args(argv)
  console.quiet_terminal(verbose=False)  # Orbax's INFO lines stay off the terminal.
  workdir = os.path.abspath(args.workdir)
  data = os.path.join(workdir, 'data')
  runs = [os.path.join(workdir, f'run{i}') for i in (1, 2)]
  summary = {'started': time.strftime('%Y-%m-%d %H:%M:%S'),
             'XLA_FLAGS': os.environ.get('XLA_FLAGS', '')}
  ok = True
  try:
    for run in runs:
      if os.path.exists(run):
        raise ValueError(f'--workdir={workdir}: {run} exists; give a new or empty folder')
    for run in runs:
      start = time.time()
      _train(run, data, args.steps)
      print(f'trained {run}: {args.steps} steps in {time.time() - start:.1f} s', flush=True)
    summary['reruns'] = compare_runs(*runs)
    ok &= summary['reruns']['bit_identical']
    print(f'reruns: {json.dumps(summary["reruns"])}', flush=True)
    summary['translation'] = compare_translations(
        runs[0], os.path.join(data, 'skimage_dusk', 'testA'),
        os.path.join(workdir, 'translated_here'), os.path.join(workdir, 'translated_on_cpu'))
    ok &= summary['translation']['within_1']
    print(f'translation here and on the CPU: {json.dumps(summary["translation"])}', flush=True)
    summary['benchmark'] = run_benchmarks(BENCHMARKS[args.benchmark])
  except (RuntimeError, ValueError, OSError) as e:
    summary['error'] = str(e)
    ok = False
  summary['ok'] = bool(ok)
  print(json.dumps(summary), flush=True)
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  main()
