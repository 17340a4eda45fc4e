"""A synthetic unpaired task with a known answer, written as an image folder.

Domain A: random reddish shapes on a reddish background (red is the strongest
channel). Domain B: other such images with their colour channels rotated
(R, G, B) -> (B, R, G), so green dominates. The two domains differ in
distribution, and the true A->B translation of an image is known exactly.
"""

import os

import numpy as np
from PIL import Image, ImageDraw


def to_b(images: np.ndarray) -> np.ndarray:
  """The ground-truth A -> B colour change."""
  return images[..., [2, 0, 1]]


def _reddish(rng: np.random.Generator) -> tuple[int, int, int]:
  return (int(rng.integers(128, 256)), int(rng.integers(0, 128)), int(rng.integers(0, 128)))


def random_scene(rng: np.random.Generator, size: int) -> np.ndarray:
  image = Image.new('RGB', (size, size), _reddish(rng))
  draw = ImageDraw.Draw(image)
  for _ in range(rng.integers(2, 5)):
    x0, y0 = rng.integers(0, size * 3 // 4, 2)
    w, h = rng.integers(size // 6, size // 2, 2)
    colour = _reddish(rng)
    shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
    shape([int(x0), int(y0), int(x0 + w), int(y0 + h)], fill=colour)
  return np.asarray(image)


def _write_domains(root: str, n_train: int, n_test: int, seed: int, write) -> str:
  """Calls write(rng, domain, path without extension) for every image of
  root/{trainA,trainB,testA,testB}, in one fixed order; returns root."""
  rng = np.random.default_rng(seed)
  for split, count in (('train', n_train), ('test', n_test)):
    for domain in 'AB':
      folder = os.path.join(root, split + domain)
      os.makedirs(folder, exist_ok=True)
      for i in range(count):
        write(rng, domain, os.path.join(folder, f'{i:04d}'))
  return root


def make_unpaired_folder(root: str, n_train: int = 64, n_test: int = 16, size: int = 32,
                         seed: int = 0) -> str:
  """Writes root/{trainA,trainB,testA,testB}/*.png and returns root."""
  def write(rng, domain, path):
    scene = random_scene(rng, size)
    Image.fromarray(to_b(scene) if domain == 'B' else scene).save(path + '.png')
  return _write_domains(root, n_train, n_test, seed, write)


def make_aligned_folder(root: str, n_train: int = 64, n_test: int = 16, size: int = 32,
                        seed: int = 0) -> str:
  """Writes root/{train,test}/*.png of side-by-side pairs A | to_b(A), the
  official pix2pix layout, and returns root."""
  rng = np.random.default_rng(seed)
  for split, count in (('train', n_train), ('test', n_test)):
    folder = os.path.join(root, split)
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
      scene = random_scene(rng, size)
      Image.fromarray(np.concatenate([scene, to_b(scene)], axis=1)).save(
          os.path.join(folder, f'{i:04d}.png'))
  return root


def gray16_scene(rng: np.random.Generator, size: int) -> np.ndarray:
  """A random scene as 16-bit gray (H, W, 1): its 8-bit luminance x 257 plus
  low-byte detail, so that reading it as 8 bits would lose something."""
  gray = np.asarray(Image.fromarray(random_scene(rng, size)).convert('L'), np.uint16)
  detail = rng.integers(0, 200, gray.shape, dtype=np.uint16)
  return np.minimum(gray * 257 + detail, 65535).astype(np.uint16)[..., None]


def make_gray16_folder(root: str, n_train: int = 8, n_test: int = 2, size: int = 32,
                       seed: int = 0) -> str:
  """Writes root/{trainA,trainB,testA,testB}: 16-bit grayscale images, A
  scenes and B their negatives (65535 - A); trainB and testB as 16-bit
  TIFF, the others as 16-bit PNG. Returns root."""
  import tifffile  # pylint: disable=import-outside-toplevel

  def write(rng, domain, path):
    scene = gray16_scene(rng, size)[..., 0]
    if domain == 'A':
      Image.fromarray(scene).save(path + '.png')  # Pillow's 16-bit gray PNG ('I;16').
    else:
      tifffile.imwrite(path + '.tif', 65535 - scene)
  return _write_domains(root, n_train, n_test, seed, write)
