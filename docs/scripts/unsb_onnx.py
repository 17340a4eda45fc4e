"""Translate images with an exported UNSB step in ONNX Runtime: the NFE loop
of `--mode=translate`, without JAX (numpy, onnxruntime and Pillow only).

  python main.py --mode=export --workdir=runs/unsb --output=onnx/
  python docs/scripts/unsb_onnx.py onnx/AtoB.onnx photo.png zebra.png [--nfe=N] [--seed=S]

The exported file is one step, G(image, t, z) -> its prediction of the
translation; this script runs the chain of `nfe` steps on the time grid the
JSON beside it gives: x_0 = the image, x_t = (1 - a) x_{t-1} + a G(x_{t-1})
+ sqrt(s tau) noise, each step's z and noise drawn here with numpy from
`--seed` (JAX draws them otherwise, so the images differ from
`--mode=translate`'s in their noise, not in kind). An 8-bit RGB image whose
height and width are multiples of the JSON's `size_multiple` (4).
"""

import argparse
import json
import os

import numpy as np


def numpy_draws(seed: int, nfe: int, image_shape, z_features: int) -> list:
  """[(z (1, z_features), noise (1, H, W, C))] of each step, from numpy."""
  rng = np.random.default_rng(seed)
  return [(rng.standard_normal((1, z_features), dtype=np.float32),
           rng.standard_normal((1, *image_shape), dtype=np.float32)) for _ in range(nfe)]


def translate(session, spec: dict, x: np.ndarray, nfe: int | None = None, draws=None):
  """(N, H, W, C) float32 images in [-1, 1] -> their translation after `nfe`
  steps (default: the JSON's nfe), each image with the same `draws`
  ([(z, noise)] per step; default: numpy_draws with seed 0)."""
  steps = spec['steps']
  nfe = nfe or steps['nfe']
  times, tau = steps['times'], steps['tau']
  if draws is None:
    draws = numpy_draws(0, nfe, x.shape[1:], steps['z_features'])
  n = x.shape[0]
  predicted = None
  for step in range(nfe):
    z, noise = draws[step]
    if step > 0:  # The Brownian bridge from x_{t-1} towards G's prediction.
      delta, remaining = times[step] - times[step - 1], times[-1] - times[step - 1]
      inter = delta / remaining
      scale = delta * (1 - inter)
      x = (1 - inter) * x + inter * predicted + np.sqrt(scale * tau) * noise
    predicted = session.run(None, {spec['input']['name']: x.astype(np.float32),
                                   't': np.full((n,), step, np.int32),
                                   'z': np.broadcast_to(z, (n, z.shape[1])).astype(np.float32)})[0]
  return predicted


def main():
  import onnxruntime  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('onnx_file')
  parser.add_argument('input')
  parser.add_argument('output')
  parser.add_argument('--nfe', type=int, default=None)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  with open(os.path.splitext(args.onnx_file)[0] + '.json') as f:
    spec = json.load(f)
  session = onnxruntime.InferenceSession(args.onnx_file, providers=['CPUExecutionProvider'])
  image = np.asarray(Image.open(args.input).convert('RGB'), np.float32)[None] / 127.5 - 1
  nfe = args.nfe or spec['steps']['nfe']
  draws = numpy_draws(args.seed, nfe, image.shape[1:], spec['steps']['z_features'])
  out = translate(session, spec, image, nfe, draws)[0]
  Image.fromarray(np.round((np.clip(out, -1, 1) + 1) * 127.5).astype(np.uint8)).save(args.output)


if __name__ == '__main__':
  main()
