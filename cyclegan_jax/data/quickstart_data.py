"""A small unpaired dataset built from photos an installed package ships.

The quickstart must train on any machine, offline: scikit-image's wheel
carries a handful of colour photos (astronaut, cat, coffee, rocket,
motorcycle). Domain A is random square crops of them as they are ("day");
domain B is other crops under a fixed "dusk" grade: darker midtones, a warm
cast, little blue. The folder is built once, atomically, and then reused.
"""

import importlib.resources
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

PHOTOS = ('astronaut.png', 'chelsea.png', 'coffee.png', 'rocket.jpg',
          'motorcycle_left.png', 'motorcycle_right.png')
COUNTS = {'trainA': 240, 'trainB': 240, 'testA': 8, 'testB': 8}


def dusk(image: np.ndarray) -> np.ndarray:
  """The fixed day -> dusk grade of domain B, uint8 RGB -> uint8 RGB."""
  x = image.astype(np.float32) / 255.0
  x = x ** 1.6 * np.array([1.0, 0.7, 0.45], np.float32) + np.array([0.05, 0.01, 0.0])
  return np.asarray(np.clip(x * 255.0 + 0.5, 0, 255), np.uint8)


def _photos() -> list[Image.Image]:
  try:
    folder = importlib.resources.files('skimage') / 'data'
  except ModuleNotFoundError as e:
    raise ModuleNotFoundError('config.data.builtin=skimage_dusk needs scikit-image '
                              '(pip install scikit-image)') from e
  photos = []
  for name in PHOTOS:
    with Image.open(folder / name) as image:
      photos.append(image.convert('RGB'))
  return photos


def _random_crop(rng, photo: Image.Image, size: int) -> Image.Image:
  w, h = photo.size
  side = int(rng.integers(min(w, h) // 4, min(w, h) // 2 + 1))
  x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
  return photo.crop((x, y, x + side, y + side)).resize((size, size), Image.BICUBIC)


def _day_crops(size: int, seed: int):
  """(split, index, the day crop) of every image the dataset holds, in the
  order they are drawn: the B images are these crops under `dusk`."""
  photos = _photos()
  rng = np.random.default_rng(seed)
  for split, count in COUNTS.items():
    for i in range(count):
      yield split, i, np.asarray(_random_crop(rng, photos[i % len(photos)], size))


def graded_test_pairs(size: int = 72, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{'testA': (day, dusk), 'testB': (day, dusk)}: each test split's images
  (N, size, size, 3) uint8 as the folder holds them (testA day, testB dusk)
  beside their known other half under the fixed grade, so a translation
  can be scored against the truth."""
  pairs = {}
  for split, _, crop in _day_crops(size, seed):
    if split.startswith('test'):
      pairs.setdefault(split, []).append((crop, dusk(crop)))
  return {split: tuple(np.stack(images) for images in zip(*found))
          for split, found in pairs.items()}


def build_skimage_dusk(root: str, size: int = 72, seed: int = 0) -> str:
  """Writes root/{trainA,trainB,testA,testB}/*.png once; returns root."""
  if os.path.isfile(os.path.join(root, 'COMPLETE')):
    return root
  parent = os.path.dirname(os.path.abspath(root))
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(dir=parent, prefix='.building-')
  for split in COUNTS:
    os.makedirs(os.path.join(staging, split))
  for split, i, crop in _day_crops(size, seed):
    if split.endswith('B'):
      crop = dusk(crop)
    Image.fromarray(crop).save(os.path.join(staging, split, f'{i:04d}.png'))
  open(os.path.join(staging, 'COMPLETE'), 'w').close()
  try:
    os.rename(staging, root)  # Atomic: a half-built folder is never used.
  except OSError:  # Built meanwhile by another process, or a stale folder.
    shutil.rmtree(staging)
    if not os.path.isfile(os.path.join(root, 'COMPLETE')):
      raise
  return root


BUILDERS = {'skimage_dusk': build_skimage_dusk}


def build(name: str, cache_dir: str) -> str:
  if name not in BUILDERS:
    raise ValueError(f'config.data.builtin={name!r}: expected one of {", ".join(BUILDERS)}')
  return BUILDERS[name](os.path.join(os.path.expanduser(cache_dir), name))
