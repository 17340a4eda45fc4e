"""Unpaired image data: TFDS `cycle_gan/*` or a folder of images -> batches.

Images are read by index from random-access sources (TFDS array_record data
sources, or files on disk), so datasets stream from disk, and every step's
batch is a pure function of (seed, step): which A and B images it holds and
their crops and flips. Preprocessing follows the official `get_transform`
with PIL, so bicubic resizing matches the official code exactly.
"""

import collections
import concurrent.futures
import copy
import os
import threading
from typing import Iterator, Sequence

from absl import logging
import numpy as np
from PIL import Image

from cyclegan_jax import image_io
from cyclegan_jax import storage
from cyclegan_jax.data import quickstart_data

IMAGE_EXTENSIONS = image_io.IMAGE_EXTENSIONS
PREPROCESS_MODES = ('resize_and_crop', 'crop', 'scale_width', 'scale_width_and_crop', 'none')
SPLITS = ('trainA', 'trainB', 'testA', 'testB')
BadImageError = image_io.BadImageError


def load_image(path: str, channels: int | None = 3, value_range=()) -> np.ndarray:
  """An image file -> (H, W, channels) array of the file's own pixel type
  (image_io.read), converted to `channels` (None: as the file has them),
  its pixels checked against the value range they will be mapped from.

  Raises BadImageError, naming the file, for anything that does not decode
  completely (a truncated file included) or does not fit.
  """
  image = image_io.read(path)
  if channels is not None:
    image = image_io.to_channels(image, channels, path)
  image_io.check_value_range(image, value_range, path)
  return image


def _with_skip_hint(error: BadImageError) -> BadImageError:
  return BadImageError(f'{error}; remove or replace it, or set '
                       'config.data.skip_bad_images=True to skip such files')


def _is_image_name(name: str) -> bool:
  return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith('.')


def list_images(folder: str) -> list[str]:
  """Sorted image files directly inside `folder` (a local folder, or one on
  Cloud Storage: gs://bucket/path)."""
  if storage.is_remote(folder):
    return _list_remote_images(folder)
  if not os.path.isdir(folder):
    problem = 'not a folder' if os.path.exists(folder) else 'no such folder'
    raise FileNotFoundError(f'{folder}: {problem}; expected a folder of images '
                            f'({"/".join(IMAGE_EXTENSIONS)})')
  with os.scandir(folder) as entries:  # is_file(): a sub-folder named x.png is no image.
    files = sorted(entry.path for entry in entries
                   if _is_image_name(entry.name) and entry.is_file())
  return _found(files, folder)


def _list_remote_images(folder: str) -> list[str]:
  """list_images of a remote folder: the objects directly under its prefix
  (one listing), named as `folder` is spelled."""
  if not storage.isdir(folder):
    problem = 'not a folder' if storage.exists(folder) else 'no such folder'
    raise FileNotFoundError(f'{folder}: {problem}; expected a folder of images '
                            f'({"/".join(IMAGE_EXTENSIONS)})')
  root = storage.absolute(folder) + '/'
  # Deeper objects (a/x.png/b) are in sub-folders, as a sub-folder named x.png is.
  names = [path[len(root):] for path in storage.files_under(folder) if path.startswith(root)]
  files = sorted(storage.join(folder.rstrip('/'), name) for name in names
                 if '/' not in name and _is_image_name(name))
  return _found(files, folder)


def _found(files: list[str], folder: str) -> list[str]:
  if not files:
    raise FileNotFoundError(f'{folder}: no images found; expected files ending in '
                            f'{", ".join(IMAGE_EXTENSIONS)}')
  return files


def all_eight_bit(files) -> bool:
  """Whether every file gives 8-bit pixels (image_io.is_eight_bit: names and
  headers only, read in threads)."""
  with concurrent.futures.ThreadPoolExecutor(16) as pool:
    return all(pool.map(image_io.is_eight_bit, files))


def sends_pixels(source, data_config) -> bool:
  """Whether a source's training images go to the device as uint8 pixels:
  all of them 8-bit (its `eight_bit()`; sources without one: no) and mapped
  from (0, 255)."""
  return (image_io.value_range(data_config.value_range, np.uint8) == (0, 255)
          and bool(getattr(source, 'eight_bit', lambda: False)()))


class FolderSource(Sequence):
  """Random access to the images of one folder (one domain of one split)."""

  def __init__(self, folder: str, channels: int = 3, value_range=()):
    self.files = list_images(folder)
    self.channels, self.value_range = channels, value_range

  def __len__(self):
    return len(self.files)

  def __getitem__(self, index: int) -> np.ndarray:
    return load_image(self.files[index], self.channels, self.value_range)

  def eight_bit(self) -> bool:
    return all_eight_bit(self.files)


class TfdsSource(Sequence):
  """Random access to the images of one split of a TFDS image dataset."""

  def __init__(self, name: str, split: str, data_dir: str | None = None, channels: int = 3,
               value_range=()):
    import tensorflow_datasets as tfds  # Heavy; only needed for TFDS data.
    builder = tfds.builder(name, data_dir=data_dir or None, file_format='array_record')
    builder.download_and_prepare()
    self._source = builder.as_data_source(split=split)
    self._pixel_type = np.dtype(builder.info.features['image'].np_dtype)
    self.name, self.channels, self.value_range = f'{name} {split}', channels, value_range

  def __len__(self):
    return len(self._source)

  def __getitem__(self, index: int) -> np.ndarray:
    image = np.asarray(self._source[int(index)]['image'])
    where = f'{self.name} image {index}'
    image = image_io.to_channels(image, self.channels, where)  # Official convert('RGB' | 'L').
    image_io.check_value_range(image, self.value_range, where)
    return image

  def eight_bit(self) -> bool:
    return self._pixel_type == np.uint8


def open_sources(data_config, channels: dict[str, int] | None = None) -> dict[str, Sequence]:
  """{'trainA', 'trainB', 'testA', 'testB'} -> image sources, giving images of
  `channels` ({'A': n, 'B': n}, the family's domain_channels(config); default 3 each)."""
  channels = channels or {'A': 3, 'B': 3}
  value_range = data_config.value_range
  options = lambda split: dict(channels=channels[split[-1]], value_range=value_range)
  image_dir = data_config.image_dir
  if data_config.builtin:
    image_dir = quickstart_data.build(data_config.builtin, data_config.cache_dir)
  if image_dir:
    image_dir = os.path.expanduser(image_dir)
    if not os.path.isdir(image_dir):
      raise FileNotFoundError(f'config.data.image_dir={image_dir}: no such folder; expected a '
                              f'folder holding {", ".join(SPLITS)}')
    # Every missing split at once, so one run shows all that needs fixing.
    missing = [os.path.join(image_dir, split) for split in SPLITS
               if not os.path.isdir(os.path.join(image_dir, split))]
    if missing:
      raise FileNotFoundError(f'{", ".join(missing)}: no such folder; config.data.image_dir '
                              f'must hold {", ".join(SPLITS)} folders of images')
    return {split: FolderSource(os.path.join(image_dir, split), **options(split))
            for split in SPLITS}
  return {split: TfdsSource(data_config.tfds_name, split, data_config.tfds_data_dir,
                            **options(split)) for split in SPLITS}


# The geometric transforms act on a list of PIL images of one size: one image
# for 8-bit gray or RGB (Pillow's own modes, as the official code has them),
# one float plane per channel otherwise; crops are drawn once for all.

def _resize(planes: list, size: tuple[int, int]) -> list:
  return [p if p.size == size else p.resize(size, Image.BICUBIC) for p in planes]


def _scale_width(planes: list, target_width: int, crop_size: int) -> list:
  w, h = planes[0].size
  if w == target_width and h >= crop_size:
    return planes
  return _resize(planes, (target_width, int(max(target_width * h / w, crop_size))))


def _crop(planes: list, crop_size: int, rng: np.random.Generator | None) -> list:
  """Random crop (rng) or centre crop (None); smaller images are first scaled up."""
  w, h = planes[0].size
  if min(w, h) < crop_size:
    scale = crop_size / min(w, h)
    planes = _resize(planes, (max(crop_size, round(w * scale)),
                              max(crop_size, round(h * scale))))
    w, h = planes[0].size
  if rng is None:
    x, y = (w - crop_size) // 2, (h - crop_size) // 2
  else:
    x, y = int(rng.integers(0, w - crop_size + 1)), int(rng.integers(0, h - crop_size + 1))
  return [p.crop((x, y, x + crop_size, y + crop_size)) for p in planes]


def _to_planes(image: np.ndarray) -> list:
  if image.dtype == np.uint8 and image.shape[-1] in (1, 3):
    return [Image.fromarray(image if image.shape[-1] == 3 else image[..., 0])]
  return [Image.fromarray(np.ascontiguousarray(image[..., c], np.float32))
          for c in range(image.shape[-1])]


def _from_planes(planes: list) -> np.ndarray:
  arrays = [np.asarray(p) for p in planes]
  return arrays[0] if arrays[0].ndim == 3 else np.stack(arrays, axis=-1)


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Bicubic resize of an (H, W, C) image to (width, height), keeping its pixel type."""
  array = _from_planes(_resize(_to_planes(image), size))
  if image.dtype in (np.uint8, np.float32):
    return array.astype(image.dtype, copy=False)
  low, high = image_io.TYPE_RANGES[image.dtype]
  return np.clip(np.round(array), low, high).astype(image.dtype)


def _resized_planes(image: np.ndarray, data_config, train: bool) -> list:
  """The image as Pillow planes resized to load_size as its mode says (the
  test transform: to crop_size)."""
  mode, crop, load = data_config.preprocess, data_config.crop_size, data_config.load_size
  if not train:
    load = crop
  planes = _to_planes(image)
  if mode == 'resize_and_crop':
    planes = _resize(planes, (load, load))
  elif mode in ('scale_width', 'scale_width_and_crop'):
    planes = _scale_width(planes, load, crop)
  elif mode not in ('crop', 'none'):
    raise ValueError(f'config.data.preprocess={mode!r}: expected one of '
                     f'{", ".join(PREPROCESS_MODES)}')
  return planes


def _cropped_and_flipped(planes: list, dtype, data_config,
                         rng: np.random.Generator | None, pixels: bool = False) -> np.ndarray:
  """Crop (random with `rng`, else centred), sizes to a multiple of 4, flip
  (with `rng`), [-1, 1] floats, by the value rule of the file's pixel type.
  With `pixels`, an 8-bit image that maps from (0, 255) stays uint8 (the
  train step maps it, exactly as image_io.to_unit does)."""
  if data_config.preprocess in ('resize_and_crop', 'crop', 'scale_width_and_crop'):
    planes = _crop(planes, data_config.crop_size, rng)
  # Official `__make_power_2(base=4)`: sizes rounded to a multiple of 4.
  w, h = planes[0].size
  planes = _resize(planes, (max(4, round(w / 4) * 4), max(4, round(h / 4) * 4)))
  array = _from_planes(planes)
  low, high = image_io.value_range(data_config.value_range, dtype)
  if pixels and dtype == np.uint8 and (low, high) == (0, 255):
    if rng is not None and data_config.flip and rng.random() < 0.5:
      array = array[:, ::-1]
    return np.ascontiguousarray(array)
  array = array.astype(np.float32)
  if dtype != np.uint8:  # Bicubic overshoot, as Pillow clips 8-bit images.
    array = np.clip(array, low, high)
  if rng is not None and data_config.flip and rng.random() < 0.5:
    array = array[:, ::-1]
  return image_io.to_unit(array, low, high)


def resize_to_load(image: np.ndarray, data_config, train: bool) -> tuple[np.ndarray, type]:
  """The deterministic first half of `preprocess`, as (pixels, the file's
  pixel type): what a sweep's runs share (DecodedImages)."""
  return _from_planes(_resized_planes(image, data_config, train)), image.dtype


def crop_and_flip(resized: tuple[np.ndarray, type], data_config,
                  rng: np.random.Generator | None, pixels: bool = False) -> np.ndarray:
  """The second half of `preprocess`, on resize_to_load's output."""
  array, dtype = resized
  return _cropped_and_flipped(_to_planes(array), dtype, data_config, rng, pixels)


def preprocess(image: np.ndarray, data_config, rng: np.random.Generator | None,
               pixels: bool = False) -> np.ndarray:
  """The official `get_transform`: an (H, W, C) image of any pixel type ->
  float32 in [-1, 1] by the value rule (image_io: config.data.value_range,
  or the type's full range).

  With `rng` it is the training transform (random crop and flip); without it,
  the test transform (load_size = crop_size, centre crop, no flip). 8-bit
  gray and RGB images are resampled as Pillow's L and RGB images, as in the
  official code; others channel by channel in float, clipped to their range.
  Equal to crop_and_flip(resize_to_load(...)), without the round trip
  through an array between the two halves. With `pixels`, an 8-bit image
  mapped from (0, 255) is given as its uint8 pixels instead.
  """
  return _cropped_and_flipped(_resized_planes(image, data_config, rng is not None),
                              image.dtype, data_config, rng, pixels)


def to_uint8(images) -> np.ndarray:
  """[-1, 1] floats -> uint8 pixels (for viewing: sample grids, results pages, FID)."""
  return image_io.from_unit(images, 0, 255, np.uint8)


class Shard:
  """Images [start, end) of a source: what one process of several reads.

  Contiguous, near-equal ranges, the same boundaries as
  `tfds.even_splits(split, n=process_count)` (what `tfds.split_for_jax_process`
  uses), for TFDS and image folders alike."""

  def __init__(self, source, name: str, process_index: int, process_count: int):
    n = len(source)
    self.source, self.name = source, name
    self.start, self.end = n * process_index // process_count, n * (process_index + 1) // process_count
    if self.start == self.end:
      raise ValueError(f'{name} has {n} images, fewer than the {process_count} processes; '
                       'each process needs a shard of at least one image')

  def __len__(self) -> int:
    return self.end - self.start

  def __getitem__(self, i: int) -> np.ndarray:
    return self.source[self.start + int(i)]

  def describe(self, i: int) -> str:
    """Image i's file, or its split and index for sources without files (TFDS)."""
    files = getattr(self.source, 'files', None)
    return files[self.start + i] if files else f'{self.name} image {self.start + i}'


class DecodedImages:
  """Images decoded and resized to load_size, kept for every run of a sweep.

  The runs read the same files in their own orders; each image is decoded
  and resized once (`resize_to_load`), then every run crops and flips its
  own copy. At most `max_bytes` are kept, the least recently used dropped
  first. Thread-safe: a thread asking for an image another is decoding waits
  for it rather than decoding it again.
  """

  def __init__(self, max_bytes: int):
    self.max_bytes = max_bytes
    self.decodes = 0  # Images decoded so far (benchmark, tests).
    self.requests = 0
    self._items: collections.OrderedDict = collections.OrderedDict()
    self._bytes = 0
    self._pending: dict = {}
    self._lock = threading.Lock()

  def get(self, key, make):
    """The value kept for `key`, made by `make()` the first time."""
    while True:
      with self._lock:
        if key in self._items:
          self._items.move_to_end(key)
          self.requests += 1
          return self._items[key][0]
        pending = self._pending.get(key)
        if pending is None:
          self._pending[key] = threading.Event()
          self.requests += 1
          self.decodes += 1
          break
      pending.wait()  # Decoded by another thread (or it failed: try again).
    try:
      value = make()
    except BaseException:
      with self._lock:
        self._pending.pop(key).set()
      raise
    size = sum(x.nbytes for x in _arrays(value))
    with self._lock:  # Stored before the waiters wake.
      if size <= self.max_bytes:
        self._items[key] = (value, size)
        self._bytes += size
        while self._bytes > self.max_bytes:
          self._bytes -= self._items.popitem(last=False)[1][1]
      self._pending.pop(key).set()
    return value


def _arrays(value):
  if isinstance(value, np.ndarray):
    yield value
  elif isinstance(value, tuple):
    for item in value:
      yield from _arrays(item)


class UnpairedBatches:
  """The training batches of one process, a pure function of (seed, step).

  Process p of P reads only its own shard of each domain (`Shard`) and builds
  its `global_batch / P` rows of every global batch. Its local sample k =
  step * local_batch + j is, as in the official `unaligned` dataset, A image
  perm_e[k mod N] mod |A_p| (perm_e a permutation for local epoch e = k // N,
  N = max(|A_p|, |B_p|)) and a uniformly random B image of its shard, with
  crops and flips drawn from (seed, p, k). So a resumed run sees exactly the
  images an uninterrupted one would have.

  A file that cannot be read raises BadImageError naming it, or, with
  `data_config.skip_bad_images`, is replaced by the next readable image of
  its shard (wrapping), which keeps batches a pure function of (seed, step);
  `skipped` holds the names of the files skipped so far.
  """

  def __init__(self, source_a, source_b, data_config, seed: int, global_batch: int,
               process_index: int = 0, process_count: int = 1,
               names: tuple[str, str] = ('trainA', 'trainB'), pixels: bool = False):
    if global_batch % process_count:
      raise ValueError(f'config.train.batch_size={global_batch} does not divide over '
                       f'{process_count} processes')
    self.shard_a = Shard(source_a, names[0], process_index, process_count)
    self.shard_b = Shard(source_b, names[1], process_index, process_count)
    self.data_config = data_config
    self.seed, self.process_index = seed, process_index
    self.global_batch = global_batch
    self.local_batch = global_batch // process_count
    self.epoch_length = max(len(source_a), len(source_b))
    self.local_epoch_length = max(len(self.shard_a), len(self.shard_b))
    # Domains whose images go to the device as uint8 pixels, a quarter of
    # the bytes of floats, mapped to [-1, 1] inside the train step: with
    # `pixels`, a domain whose every image is 8-bit (sends_pixels). Decided
    # from the whole source, so every process and step agrees and the step
    # is compiled once.
    eight_bit_a = pixels and sends_pixels(source_a, data_config)
    self.pixels = {'A': eight_bit_a, 'B': eight_bit_a if source_b is source_a
                   else pixels and sends_pixels(source_b, data_config)}
    # UNSB's batches also hold 'A2': a second A image per example.
    self.second_a = False
    self.skipped: set[str] = set()
    self._skipped_lock = threading.Lock()  # `iterate` calls `batch` from several threads.
    self.decoded: DecodedImages | None = None
    self._permutations: dict[int, np.ndarray] = {}

  def for_seeds(self, seeds, decoded_cache_mb: int) -> list['UnpairedBatches']:
    """The batches of each seed (a sweep's runs): the same sources, shards and
    settings, each seed its own order, crops and flips, and one DecodedImages
    of `decoded_cache_mb` MiB for all (0: each decodes its own)."""
    decoded = DecodedImages(decoded_cache_mb << 20) if decoded_cache_mb > 0 else None
    runs = []
    for seed in seeds:
      run = copy.copy(self)
      run.seed, run.decoded, run._permutations = seed, decoded, {}
      runs.append(run)
    return runs

  @property
  def steps_per_epoch(self) -> int:
    return max(1, self.epoch_length // self.global_batch)

  def _rng(self, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([self.seed, stream, self.process_index, index])

  def _permutation(self, epoch: int) -> np.ndarray:
    """The order of local epoch `epoch` (the newest two are kept)."""
    permutation = self._permutations.get(epoch)
    if permutation is None:
      permutation = self._rng(0, epoch).permutation(self.local_epoch_length)
      kept = {e: p for e, p in self._permutations.items() if e == epoch - 1}
      self._permutations = {**kept, epoch: permutation}
    return permutation

  def _resized(self, key, make):
    """make(): an image (or pair) at load_size, decoded once for all runs
    when they share a DecodedImages."""
    return make() if self.decoded is None else self.decoded.get(key, make)

  def _example(self, k: int) -> tuple[np.ndarray, np.ndarray]:
    epoch, position = divmod(k, self.local_epoch_length)
    index_a = self._permutation(epoch)[position] % len(self.shard_a)
    index_b = self._rng(1, k).integers(len(self.shard_b))
    augment = self._rng(2, k)
    return (self._image(self.shard_a, index_a, augment, self.pixels['A']),
            self._image(self.shard_b, index_b, augment, self.pixels['B']))

  def _image(self, shard: Shard, index: int, augment, pixels: bool) -> np.ndarray:
    """Image `index` of a shard with the training transform drawn from `augment`."""
    config = self.data_config
    if self.decoded is None:  # One run: no image is kept.
      return preprocess(self._read(shard, index), config, augment, pixels)
    resized = self.decoded.get((shard.name, int(index)),
                               lambda: resize_to_load(self._read(shard, index), config, True))
    return crop_and_flip(resized, config, augment, pixels)

  def _second_a(self, k: int) -> np.ndarray:
    """Example k's second A image (second_a): any image of the shard, with
    its own crop and flip, as from a second shuffled loader."""
    index = self._rng(3, k).integers(len(self.shard_a))
    return self._image(self.shard_a, index, self._rng(4, k), self.pixels['A'])

  def _read(self, shard: Shard, index: int) -> np.ndarray:
    """Image `index` of the shard, or (skip_bad_images) the next one that reads."""
    for i in range(index, index + len(shard)):
      try:
        return shard[i % len(shard)]
      except BadImageError as e:
        if not self.data_config.skip_bad_images:
          raise _with_skip_hint(e) from e
        error, name = e, shard.describe(i % len(shard))
        with self._skipped_lock:
          first_time = name not in self.skipped
          self.skipped.add(name)
          count = len(self.skipped)
        if first_time:  # Once per file, not once per epoch.
          logging.warning('Skipping a bad training image (%d so far): %s', count, e)
    raise BadImageError(f'{shard.name}: none of the {len(shard)} images of this shard '
                        f'can be read, e.g. {error}')

  def batch(self, step: int) -> dict[str, np.ndarray]:
    first = step * self.local_batch
    pairs = [self._example(k) for k in range(first, first + self.local_batch)]
    images = {'A': [a for a, _ in pairs], 'B': [b for _, b in pairs]}
    if self.second_a:
      images['A2'] = [self._second_a(k) for k in range(first, first + self.local_batch)]
    for domain, batch in images.items():
      if self.pixels[domain[0]] and any(x.dtype != np.uint8 for x in batch):
        shard = self.shard_b if domain == 'B' else self.shard_a
        raise BadImageError(f'{shard.name}: an image of step {step} is no longer 8-bit, as '
                            'all were when training started; restart the run to read them '
                            'as they are now')
      if len({x.shape for x in batch}) > 1:
        raise ValueError(
            f'config.data.preprocess={self.data_config.preprocess!r} gives {domain} images '
            f'of different sizes ({sorted({x.shape[:2] for x in batch})}) in one batch; '
            'use a cropping mode or batch_size 1 per device')
    return {domain: np.stack(batch) for domain, batch in images.items()}

  def iterate(self, start_step: int, num_workers: int = 4) -> Iterator[dict[str, np.ndarray]]:
    """Batches for start_step, start_step + 1, ..., built ahead in threads."""
    ahead = max(1, num_workers)
    pool = concurrent.futures.ThreadPoolExecutor(ahead)
    try:
      pending = collections.deque(pool.submit(self.batch, start_step + i) for i in range(ahead))
      step = start_step + ahead
      while True:
        batch = pending.popleft().result()
        pending.append(pool.submit(self.batch, step))
        step += 1
        yield batch
    finally:
      # No waiting for the workers: the garbage collector may close an
      # abandoned iterator (training stopped by an error) in one of them, and
      # a thread cannot join itself.
      pool.shutdown(wait=False, cancel_futures=True)


def test_images(source, data_config, count: int) -> np.ndarray:
  """The first `count` images of a source with the test transform; with
  `data_config.skip_bad_images`, the first `count` that can be read."""
  images, error = [], None
  for i in range(len(source)):
    if len(images) == count:
      break
    try:
      images.append(preprocess(source[i], data_config, None))
    except BadImageError as e:
      if not data_config.skip_bad_images:
        raise _with_skip_hint(e) from e
      logging.warning('Skipping a bad test image: %s', e)
      error = e
  if not images and error:
    raise BadImageError(f'none of the {len(source)} test images can be read, e.g. {error}')
  return np.stack(images)
