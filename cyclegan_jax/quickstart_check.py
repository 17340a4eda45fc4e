"""Whether a quick-start model learned, in numbers a newcomer can read.

The quick start's dataset (data/quickstart_data.py) knows the truth: domain B
is domain A under a fixed grade, and its test images can be rebuilt with
their other half. So a translation can be scored against it:

  grade_psnr(workdir)      {direction: (PSNR of the translations against the
                           known other half, PSNR of the inputs left as they
                           are)}: dB, over the test images of the direction's
                           source domain
  checkerboard(images)     the 2x2 checkerboard component of images (what
                           transposed convolutions leave: |x00 - x01 - x10 +
                           x11| / 4 over the 2x2 blocks, divided by the
                           image's standard deviation), averaged over images
  checkerboard_ratios(..)  {direction: translations' checkerboard / that of
                           real images of the target domain}: 1 is as smooth
                           as real photos
  summary_lines(workdir)   one line per direction, as the quick start ends

  python -m cyclegan_jax.quickstart_check --workdir=runs/quick
"""

import sys

import numpy as np

from cyclegan_jax import generation
from cyclegan_jax import inference
from cyclegan_jax.data import quickstart_data

# Which test split a direction reads, and which half of the pair is its truth.
_SOURCE = {'AtoB': ('testA', 0, 1), 'BtoA': ('testB', 1, 0)}


def checkerboard(images: np.ndarray) -> float:
  """The mean over (N, H, W, C) images of each one's 2x2 checkerboard
  component divided by its standard deviation (a flat image counts 0)."""
  x = np.asarray(images, np.float64)
  x = x[:, :x.shape[1] // 2 * 2, :x.shape[2] // 2 * 2]
  pattern = np.abs(x[:, 0::2, 0::2] - x[:, 0::2, 1::2] - x[:, 1::2, 0::2] + x[:, 1::2, 1::2]) / 4
  spread = x.reshape(len(x), -1).std(axis=1)
  per_image = pattern.reshape(len(x), -1).mean(axis=1) / np.where(spread > 0, spread, np.inf)
  return float(per_image.mean())


def psnr(images: np.ndarray, truth: np.ndarray) -> float:
  """Peak signal-to-noise ratio in dB of uint8 images against the truth,
  from the mean squared error over all of them."""
  error = np.mean((np.asarray(images, np.float64) - np.asarray(truth, np.float64)) ** 2)
  return float('inf') if error == 0 else float(10 * np.log10(255.0 ** 2 / error))


def _translations(workdir: str, step: int | None = None, run: str | None = None) -> dict:
  """{direction: (translations, inputs, truth, real images of the target
  domain)} of the quick start's test images, each at its own size."""
  config = inference.load_config(workdir, run)
  if config.data.builtin != 'skimage_dusk':
    raise ValueError(f'{workdir}: trained on config.data.builtin={config.data.builtin!r}; the '
                     "check knows the truth of the quick start's data only ('skimage_dusk')")
  pairs = quickstart_data.graded_test_pairs(config.data.load_size)
  restored = inference.restore(workdir, inference.ALL, step, config, run)
  found = {}
  for generator in restored.generators:
    split, have, want = _SOURCE[generator.direction]
    inputs, truth = pairs[split][have], pairs[split][want]
    target_split = 'testB' if split == 'testA' else 'testA'
    real_target = pairs[target_split][1 if target_split == 'testB' else 0]
    translated = generation.translate_images(generator.module, generator.params, inputs)
    found[generator.direction] = (translated, inputs, truth, real_target)
  return found


def grade_psnr(workdir: str, step: int | None = None, run: str | None = None) -> dict:
  return {direction: (psnr(translated, truth), psnr(inputs, truth))
          for direction, (translated, inputs, truth, _) in
          _translations(workdir, step, run).items()}


def checkerboard_ratios(workdir: str, step: int | None = None, run: str | None = None) -> dict:
  return {direction: checkerboard(translated) / checkerboard(real_target)
          for direction, (translated, _, _, real_target) in
          _translations(workdir, step, run).items()}


_NAMES = {'AtoB': 'day -> dusk', 'BtoA': 'dusk -> day'}


def summary_lines(workdir: str, step: int | None = None, run: str | None = None) -> list[str]:
  """One line per direction: the PSNR against the known grade, beside doing
  nothing, and the checkerboard ratio."""
  translations = _translations(workdir, step, run)
  lines = []
  for direction, (translated, inputs, truth, real_target) in translations.items():
    count = len(inputs)
    lines.append(f'{_NAMES[direction]} ({direction}): PSNR {psnr(translated, truth):.1f} dB '
                 f'against the known grade over {count} test images (the inputs as they are: '
                 f'{psnr(inputs, truth):.1f} dB); checkerboard '
                 f'{checkerboard(translated) / checkerboard(real_target):.2f}x that of real '
                 'photos')
  return lines


def main(argv: list[str]) -> int:
  workdirs = [a.split('=', 1)[1] for a in argv if a.startswith('--workdir=')]
  steps = [int(a.split('=', 1)[1]) for a in argv if a.startswith('--step=')]
  if len(workdirs) != 1 or len(argv) != 1 + len(steps):
    print('usage: python -m cyclegan_jax.quickstart_check --workdir=W [--step=N]',
          file=sys.stderr)
    return 2
  try:
    for line in summary_lines(workdirs[0], steps[0] if steps else None):
      print(line)
  except (ValueError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
