"""Paired image data for pix2pix: (A, B) images that belong together.

Two layouts, both under config.data.image_dir:
- the official `aligned` one: train/ and test/ (or val/) holding side-by-side
  images, A on the left half and B on the right;
- trainA/ trainB/ testA/ testB/ whose files are paired by name (a.png in
  trainA with a.jpg or a.png in trainB).
Batches reuse `input_pipeline.UnpairedBatches`' sharding, threading and
pure-function-of-(seed, step) rules; the pair of an example gets one random
crop and flip, applied to both images, as the official `AlignedDataset` does.
"""

import os
from typing import Sequence

import numpy as np
from cyclegan_jax import image_io
from cyclegan_jax.data import input_pipeline

DIRECTIONS = ('AtoB', 'BtoA')


def split_aligned(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """An AB image -> (A, B): the left half and the rest, as the official code splits."""
  half = image.shape[1] // 2
  return image[:, :half], image[:, half:]


class AlignedSource(Sequence):
  """The (A, B) pairs of a folder of side-by-side AB images, each half read
  with its domain's channels ({'A': n, 'B': n}; default 3 each)."""

  def __init__(self, folder: str, channels: dict[str, int] | None = None, value_range=()):
    self.files = input_pipeline.list_images(folder)
    self.channels = channels or {'A': 3, 'B': 3}
    self.value_range = value_range

  def __len__(self):
    return len(self.files)

  def eight_bit(self) -> bool:
    return input_pipeline.all_eight_bit(self.files)

  def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
    path = self.files[index]
    image = input_pipeline.load_image(path, None, self.value_range)
    if image.shape[1] < 2:
      raise input_pipeline.BadImageError(f'{path}: {image.shape[1]} pixel(s) wide; expected '
                                         'an A|B image side by side')
    a, b = split_aligned(image)
    return (image_io.to_channels(a, self.channels['A'], f'{path} (A, left half)'),
            image_io.to_channels(b, self.channels['B'], f'{path} (B, right half)'))


def _by_stem(folder: str) -> dict[str, str]:
  """{file name without extension: path} of a folder's images; two files of
  one name (x.png, x.jpg) would make the pairing ambiguous."""
  files = {}
  for path in input_pipeline.list_images(folder):
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem in files:
      raise ValueError(f'{folder}: several files named {stem}.* (e.g. '
                       f'{os.path.basename(path)}); pairs are matched by name without '
                       'extension, so keep one of them')
    files[stem] = path
  return files


class PairedFolderSource(Sequence):
  """The (A, B) pairs of two folders, matched by file name without extension."""

  def __init__(self, folder_a: str, folder_b: str, channels: dict[str, int] | None = None,
               value_range=()):
    self.channels = channels or {'A': 3, 'B': 3}
    self.value_range = value_range
    files_a, files_b = _by_stem(folder_a), _by_stem(folder_b)
    for folder, mine, other in ((folder_a, files_a, files_b), (folder_b, files_b, files_a)):
      unmatched = sorted(set(mine) - set(other))
      if unmatched:
        names = ', '.join(os.path.basename(mine[s]) for s in unmatched[:5])
        more = f' and {len(unmatched) - 5} more' if len(unmatched) > 5 else ''
        raise ValueError(f'{folder}: {names}{more} have no partner of the same name in '
                         f'{folder_b if folder == folder_a else folder_a}; pix2pix needs '
                         'every image paired')
    self.files = [(files_a[s], files_b[s]) for s in sorted(files_a)]

  def __len__(self):
    return len(self.files)

  def eight_bit(self) -> bool:
    return input_pipeline.all_eight_bit([path for pair in self.files for path in pair])

  def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
    path_a, path_b = self.files[index]
    return (input_pipeline.load_image(path_a, self.channels['A'], self.value_range),
            input_pipeline.load_image(path_b, self.channels['B'], self.value_range))


def open_paired_sources(data_config, channels: dict[str, int] | None = None
                        ) -> dict[str, Sequence]:
  """{'train', 'test'} -> sources of (A, B) pairs, of `channels` ({'A': n,
  'B': n}: the family's domain_channels(config); default 3 each)."""
  options = dict(channels=channels, value_range=data_config.value_range)
  root = os.path.expanduser(data_config.image_dir)
  if not root:
    raise ValueError('config.data.image_dir is empty; pix2pix needs a folder of paired images '
                     '(train/ and test/ of side-by-side AB images, or trainA/ trainB/ testA/ '
                     'testB/ paired by file name)')
  if not os.path.isdir(root):
    raise FileNotFoundError(f'config.data.image_dir={root}: no such folder')
  has = lambda name: os.path.isdir(os.path.join(root, name))
  if has('train'):
    test = next((name for name in ('test', 'val') if has(name)), None)
    if test is None:
      raise FileNotFoundError(f'{os.path.join(root, "test")}: no such folder (nor val/); '
                              'expected test images beside train/')
    return {'train': AlignedSource(os.path.join(root, 'train'), **options),
            'test': AlignedSource(os.path.join(root, test), **options)}
  if all(has(split) for split in input_pipeline.SPLITS):
    return {phase: PairedFolderSource(os.path.join(root, phase + 'A'),
                                      os.path.join(root, phase + 'B'), **options)
            for phase in ('train', 'test')}
  raise FileNotFoundError(f'config.data.image_dir={root}: expected train/ and test/ of '
                          'side-by-side AB images, or trainA/ trainB/ testA/ testB/')


def input_and_target(pair, direction: str):
  """(input, target) of an (A, B) pair, or of a dict with 'A' and 'B'."""
  a, b = (pair['A'], pair['B']) if isinstance(pair, dict) else pair
  if direction not in DIRECTIONS:
    raise ValueError(f'config.data.direction={direction!r}: expected AtoB or BtoA')
  return (a, b) if direction == 'AtoB' else (b, a)


class PairedBatches(input_pipeline.UnpairedBatches):
  """Batches {'A', 'B'} of pairs: example k is pair perm_e[k mod N] of this
  process's shard (a new permutation every epoch, like the official shuffled
  loader), its A and B given the same crop and flip, drawn from (seed, p, k)."""

  def __init__(self, source, data_config, seed: int, global_batch: int,
               process_index: int = 0, process_count: int = 1, pixels: bool = False):
    super().__init__(source, source, data_config, seed, global_batch, process_index,
                     process_count, names=('train', 'train'), pixels=pixels)

  def _example(self, k: int) -> tuple[np.ndarray, np.ndarray]:
    epoch, position = divmod(k, self.local_epoch_length)
    index = int(self._permutation(epoch)[position])

    def resized():
      a, b = self._read(self.shard_a, index)
      if b.shape != a.shape:  # An odd-width AB image, or paired files of two sizes.
        b = input_pipeline.resize(b, a.shape[1::-1])
      return tuple(input_pipeline.resize_to_load(x, self.data_config, True) for x in (a, b))

    a, b = self._resized(('train', index), resized)
    # Two generators from the same seed draw the same crop and flip for A and
    # B, which have one size (the official code draws them once from A's size).
    return (input_pipeline.crop_and_flip(a, self.data_config, self._rng(2, k), self.pixels['A']),
            input_pipeline.crop_and_flip(b, self.data_config, self._rng(2, k), self.pixels['B']))


def test_pairs(source, data_config, count: int) -> dict[str, np.ndarray]:
  """{'A', 'B'}: the first `count` pairs with the test transform."""
  pairs = [source[i] for i in range(min(count, len(source)))]
  return {name: np.stack([input_pipeline.preprocess(pair[j], data_config, None)
                          for pair in pairs])
          for j, name in enumerate('AB')}
