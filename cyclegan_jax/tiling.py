"""Translation of an image of any size in overlapping tiles, in memory set by
the tile size, with the normalisation statistics of the whole image.

A generator normalises each feature map by its statistics over the whole
image (instance norm; batch norm at batch 1 alike). Cut into tiles and run
tile by tile, each tile would be normalised by its own statistics: seams and
a tone shift from tile to tile. Here every normalisation layer gets the
statistics of the whole (padded) image instead, gathered over the tiles:

- 'exact': one pass over the tiles per normalisation layer, layer k's pass
  running the generator up to layer k with the statistics of layers 0..k-1
  already known (XLA drops the layers after k), each tile adding its share
  (count, mean, centred sum of squares, merged in float64). Then one pass
  that writes the output. A tile's centre is the untiled translation's up to
  float rounding: tiles overlap by the generator's receptive radius
  (models.receptive_radius), and tiles at the image's border end where the
  image ends, so its own padding is the untiled one.
- 'thumbnail' (approximate, one pass): the statistics of each layer are
  taken from the untiled translation of the image shrunk to at most
  THUMBNAIL_SIZE pixels (block means), as Thumbnail Instance Normalization
  does (Chen et al., CVPR 2022); then the output pass.

Dropout at test time (pix2pix) draws each layer's mask for the whole padded
image and keeps the tile's part of it: the masks of the untiled run.

A generator that translates in steps from noise (UNSB) is tiled step by
step: x_t is held whole at the padded size, each step's G(x_t, t, z) runs in
tiles with the whole image's statistics (sb_models.TranslationStep), and the
bridge between steps adds the noise drawn for the whole padded image, as
untiled.

The same interception gives one compiled program for many sizes (the
demo's --demo_buckets, translate_image_in_bucket): the image in the corner
of a larger canvas, its size an argument, each layer's statistics over the
image and each padding layer shown past the image's edge what the untiled
generator's padding puts there.
"""

import dataclasses
import functools
import math
from typing import Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cyclegan_jax import generation
from cyclegan_jax import image_io
from cyclegan_jax import memory
from cyclegan_jax import models
from cyclegan_jax import sb_models

STATS_MODES = ('exact', 'thumbnail')
# Tile sizes tried, largest first, when an image does not fit in memory whole.
AUTO_TILES = (2048, 1024, 512)
THUMBNAIL_SIZE = 512  # Longer side of the thumbnail: a fraction of a second per image.
TIFF_TILE_MULTIPLE = 16  # A TIFF tile's sides are multiples of 16; cores are output tiles.


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def halo(generator: nn.Module) -> int:
  """How far tiles reach past their core on each side: the receptive radius,
  rounded up to the generator's multiple so that every tile stays on the
  grid of its coarsest feature map."""
  return _round_up(models.receptive_radius(generator), models.generator_multiple(generator))


def core_multiple(generator: nn.Module) -> int:
  return math.lcm(models.generator_multiple(generator), TIFF_TILE_MULTIPLE)


def min_tile(generator: nn.Module) -> int:
  """The smallest --tile: a core of one core_multiple with the halo around it."""
  return 2 * halo(generator) + core_multiple(generator)


def check_tile(generator: nn.Module, tile: int) -> None:
  if tile < min_tile(generator):
    raise ValueError(
        f'--tile={tile}: this generator needs tiles of at least {min_tile(generator)} pixels '
        f'(its receptive radius {models.receptive_radius(generator)}, rounded to '
        f'{halo(generator)}, on each side of a {core_multiple(generator)}-pixel centre)')


@dataclasses.dataclass(frozen=True)
class Tile:
  """One tile, in the coordinates of the padded image: the window the
  generator runs on and the core, inside it, that is this tile's output."""
  window: tuple[int, int, int, int]  # y0, y1, x0, x1
  core: tuple[int, int, int, int]


def padded_size(generator: nn.Module, height: int, width: int) -> tuple[int, int]:
  """The size the untiled translation runs at (reflect-padded to the multiple)."""
  multiple = models.generator_multiple(generator)
  return _round_up(height, multiple), _round_up(width, multiple)


def core_size(generator: nn.Module, tile: int) -> int:
  """The side of a tile's core: the largest core_multiple that leaves the
  halo on each side within `tile`."""
  return (tile - 2 * halo(generator)) // core_multiple(generator) * core_multiple(generator)


def plan(generator: nn.Module, height: int, width: int, tile: int) -> list[Tile]:
  """The tiles of an image, row by row. Along an axis the padded image
  spans in one window (no longer than `tile`), there is one tile; along a
  longer one, cores of side core_size, the last cut at the padded image's
  edge. Every window has the same size, shifted inward at the edges, so
  that one compiled program runs every tile."""
  check_tile(generator, tile)
  margin = halo(generator)

  def spans(length):
    core = length if length <= tile else core_size(generator, tile)
    window = min(core + 2 * margin, length)
    for start in range(0, length, core):
      end = min(start + core, length)
      low = min(max(start - margin, 0), length - window)
      yield (low, low + window), (start, end)

  padded_h, padded_w = padded_size(generator, height, width)
  return [Tile(window=wy + wx, core=cy + cx)
          for wy, cy in spans(padded_h) for wx, cx in spans(padded_w)]


def reflect_indices(start: int, stop: int, size: int) -> np.ndarray:
  """Rows (or columns) start..stop-1 of an axis reflect-padded past `size`
  (np.pad mode 'reflect', repeated for pads longer than the axis)."""
  index = np.arange(start, stop)
  if size == 1:
    return np.zeros_like(index)
  period = 2 * (size - 1)
  index = np.abs(index) % period
  return np.where(index >= size, period - index, index)


# --- The generator with whole-image statistics -----------------------------


def _normalise(module, x, mean, var):
  """What `module` (a normalisation layer) computes with these statistics."""
  if isinstance(module, models.BatchNorm):
    params = module.variables['params']
    y = (x.astype(jnp.float32) - mean) * jax.lax.rsqrt(var + 1e-5)
    return (y * params['scale'] + params['bias']).astype(module.dtype)
  # nn.InstanceNorm(use_scale=False, use_bias=False), as Flax computes it.
  y = (x.astype(jnp.float32) - mean) * jax.lax.rsqrt(var + module.epsilon)
  return y.astype(module.dtype or x.dtype)


def _is_norm(module) -> bool:
  return isinstance(module, (nn.InstanceNorm, models.BatchNorm))


def _core_measurement(x, factor, core_box):
  """(count, mean, centred sum of squares) of feature map x (1, h, w, C) over
  the tile's core (`core_box` y0, y1, x0, x1 in window pixels; x is the
  window downsampled `factor` times). lax's iota and expand_dims, not NumPy
  indexing: jax2onnx converts those at symbolic sizes (export)."""
  rows = jax.lax.broadcasted_iota(jnp.int32, x.shape[1:3], 0)
  cols = jax.lax.broadcasted_iota(jnp.int32, x.shape[1:3], 1)
  y0, y1, x0, x1 = (c // factor for c in core_box)
  inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
  mask = jax.lax.expand_dims(inside, (0, 3)).astype(jnp.float32)
  x32 = x.astype(jnp.float32)
  count = jnp.sum(mask)
  mean = jnp.sum(x32 * mask, axis=(0, 1, 2)) / count
  return count, mean, jnp.sum(jnp.square((x32 - mean) * mask), axis=(0, 1, 2))


def _interceptor(stats, window_origin, window_size, padded, core_box=None, found=None,
                 record=None):
  """Normalisation layers 0..len(stats)-1 use `stats`; layer len(stats)
  appends its core's (count, mean, centred sum of squares) to `found`
  (`core_box`, relative to the window). With `record`, every layer computes
  its own statistics, as untiled, and appends them (the thumbnail)."""
  counter = [0]

  def intercept(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != '__call__':
      return next_fun(*args, **kwargs)
    if isinstance(module, nn.Dropout) and not module.deterministic and module.rate > 0:
      x = args[0]
      factor = window_size[0] // x.shape[1]
      keep = jax.random.bernoulli(module.make_rng('dropout'), 1.0 - module.rate,
                                  (x.shape[0], padded[0] // factor, padded[1] // factor,
                                   x.shape[3]))
      keep = jax.lax.dynamic_slice(keep, (0, window_origin[0] // factor,
                                          window_origin[1] // factor, 0), x.shape)
      return jax.lax.select(keep, x / (1.0 - module.rate), jnp.zeros_like(x))
    if not _is_norm(module):
      return next_fun(*args, **kwargs)
    x = args[0]
    k = counter[0]
    counter[0] += 1
    if record is not None:
      x32 = x.astype(jnp.float32)
      mean, var = jnp.mean(x32, axis=(0, 1, 2)), jnp.var(x32, axis=(0, 1, 2))
      record.append((mean, var))
      return _normalise(module, x, mean, var)
    if k < len(stats):
      return _normalise(module, x, *stats[k])
    if k == len(stats):
      found.append(_core_measurement(x, window_size[0] // x.shape[1], core_box))
    return x  # Past the layer being measured nothing is used: XLA drops it.

  return intercept


def _run(generator, params, window, intercept):
  with nn.intercept_methods(intercept):
    return generation.apply_in_test_mode(generator, params, window)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _layer_statistics(generator, padded, params, stats, window, origin, core_box):
  """Normalisation layer len(stats)'s (count, mean, M2) over one tile's core."""
  found = []
  _run(generator, params, window,
       _interceptor(stats, origin, window.shape[1:3], padded, core_box, found))
  if not found:
    raise ValueError('no normalisation layer left to measure')
  return found[0]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _tile_output(generator, padded, params, stats, window, origin):
  """The generator's output on one window, with every layer's statistics given."""
  return _run(generator, params, window,
              _interceptor(stats, origin, window.shape[1:3], padded))


def _own_layer_statistics(generator, params, image):
  """Every normalisation layer's (mean, var) in `image`'s untiled translation."""
  record = []
  _run(generator, params, image,
       _interceptor((), (0, 0), image.shape[1:3], image.shape[1:3], record=record))
  return tuple(record)


_recorded_statistics = jax.jit(_own_layer_statistics, static_argnums=0)


def _merge(total, part):
  """Chan et al.'s pairwise merge of (count, mean, M2), in float64."""
  n_a, mean_a, m2_a = total
  n_b, mean_b, m2_b = (np.float64(part[0]), np.asarray(part[1], np.float64),
                       np.asarray(part[2], np.float64))
  n = n_a + n_b
  delta = mean_b - mean_a
  return n, mean_a + delta * (n_b / n), m2_a + m2_b + delta**2 * (n_a * n_b / n)


class TiledTranslation:
  """One image translated tile by tile.

  `read_window(y0, y1, x0, x1)` returns that window of the padded image
  (rows and columns past the image reflected, reflect_indices) as float32 in
  [-1, 1], shape (y1-y0, x1-x0, C): the caller decides where pixels come
  from (a file read a window at a time, an array).
  """

  def __init__(self, generator, params, height: int, width: int, channels: int, tile: int,
               read_window: Callable[[int, int, int, int], np.ndarray],
               stats_mode: str = 'exact'):
    if stats_mode not in STATS_MODES:
      raise ValueError(f'--tile_stats={stats_mode!r}: expected one of {", ".join(STATS_MODES)}')
    # Recomputing blocks (remat) is for training: the same parameters either way.
    self.generator = generator.clone(remat=False) if hasattr(generator, 'remat') else generator
    self.params, self.channels = params, channels
    self.height, self.width = height, width
    self.padded = padded_size(generator, height, width)
    self.tiles = plan(generator, height, width, tile)
    # The cores' height and width (the last of a row or column cut).
    self.core = (self.tiles[0].core[1] - self.tiles[0].core[0],
                 self.tiles[0].core[3] - self.tiles[0].core[2])
    self.read_window, self.stats_mode = read_window, stats_mode
    self._output_program = None  # Compiled by check_fits or the first output tile.

  def _window(self, tile: Tile):
    y0, y1, x0, x1 = tile.window
    window = np.asarray(self.read_window(y0, y1, x0, x1), np.float32)[None]
    core = (tile.core[0] - y0, tile.core[1] - y0, tile.core[2] - x0, tile.core[3] - x0)
    return window, np.array([y0, x0], np.int32), np.array(core, np.int32)

  def check_fits(self, what: str) -> None:
    """InsufficientMemoryError (one line) when one tile's program exceeds the
    memory available, before any work is done."""
    y0, y1, x0, x1 = self.tiles[0].window
    window = jax.ShapeDtypeStruct((1, y1 - y0, x1 - x0, self.channels), jnp.float32)
    stats = [(jax.ShapeDtypeStruct((c,), jnp.float32),) * 2 for c in self._norm_channels]
    self._output_program = _tile_output.lower(
        self.generator, self.padded, self.params, stats, window,
        jax.ShapeDtypeStruct((2,), jnp.int32)).compile()
    memory.check_fits(self._output_program, what, 'pass a smaller --tile')

  @functools.cached_property
  def _norm_channels(self) -> list[int]:
    """Each normalisation layer's channel count, in order (traced once)."""
    return [c for c, _ in norm_layers(self.generator, self.params, self.channels)]

  def statistics(self, progress: Callable[[], None] = lambda: None) -> list:
    """Every normalisation layer's (mean, var) over the whole padded image."""
    if self.stats_mode == 'thumbnail':
      return self._thumbnail_statistics()
    stats = []
    for _ in self._norm_channels:
      total = (np.float64(0), np.float64(0), np.float64(0))
      compiled = None
      for tile in self.statistics_tiles():
        window, origin, core = self._window(tile)
        if compiled is None:  # Compiled once per pass: calls skip jit's dispatch.
          compiled = _layer_statistics.lower(self.generator, self.padded, self.params, stats,
                                             window, origin, core).compile()
        total = _merge(total, compiled(self.params, stats, window, origin, core))
        progress()
      n, mean, m2 = total
      stats.append((jnp.asarray(mean, jnp.float32), jnp.asarray(m2 / n, jnp.float32)))
    return stats

  def _thumbnail_statistics(self) -> list:
    multiple = models.generator_multiple(self.generator)
    padded_h, padded_w = self.padded
    factor = max(1, math.ceil(max(padded_h, padded_w) / THUMBNAIL_SIZE))
    rows, cols = -(-padded_h // factor), -(-padded_w // factor)
    thumbnail = np.zeros((rows, cols, self.channels), np.float32)
    band = factor * max(1, 256 // factor)  # Rows read at a time: whole blocks.
    for y0 in range(0, padded_h, band):
      y1 = min(y0 + band, padded_h)
      pixels = np.asarray(self.read_window(y0, y1, 0, padded_w), np.float32)
      pad = ((0, -(y1 - y0) % factor), (0, -padded_w % factor), (0, 0))
      pixels = np.pad(pixels, pad, mode='edge')
      blocks = pixels.reshape(pixels.shape[0] // factor, factor, cols, factor, self.channels)
      thumbnail[y0 // factor:y0 // factor + blocks.shape[0]] = blocks.mean(axis=(1, 3))
    pad = ((0, -rows % multiple), (0, -cols % multiple), (0, 0))
    thumbnail = np.pad(thumbnail, pad, mode='reflect')[None]
    return list(_recorded_statistics(self.generator, self.params, thumbnail))

  def outputs(self, stats, progress: Callable[[], None] = lambda: None
              ) -> Iterator[tuple[tuple[int, int, int, int], np.ndarray]]:
    """(core box cut to the image, translation in [-1, 1]) per tile, row by row."""
    for tile in self.tiles:
      window, origin, _ = self._window(tile)
      if self._output_program is None:
        self._output_program = _tile_output.lower(self.generator, self.padded, self.params,
                                                  stats, window, origin).compile()
      y = np.asarray(self._output_program(self.params, stats, window, origin))[0]
      y0, y1, x0, x1 = tile.core
      y1, x1 = min(y1, self.height), min(x1, self.width)
      wy, wx = tile.window[0], tile.window[2]
      progress()
      if y0 < y1 and x0 < x1:  # A core wholly in the padding has no output.
        yield (y0, y1, x0, x1), y[y0 - wy:y1 - wy, x0 - wx:x1 - wx]

  def statistics_tiles(self) -> list[Tile]:
    """The tiles whose cores give the statistics: all ('exact'), none ('thumbnail')."""
    return [] if self.stats_mode == 'thumbnail' else self.tiles

  def tile_runs(self) -> int:
    """How many times the generator runs on a window: once per normalisation
    layer for each statistics tile (the layers up to it), then once per tile."""
    return len(self._norm_channels) * len(self.statistics_tiles()) + len(self.tiles)


# --- The same, as one program a caller drives (ONNX export) ----------------


def norm_layers(generator, params, channels: int) -> list[tuple[int, int]]:
  """(channels, downsampling factor) of each normalisation layer's input, in
  the order the generator runs them (traced once, at a size any generator takes)."""
  size = 2 * models.generator_multiple(generator)
  found = []

  def intercept(next_fun, args, kwargs, context):
    if context.method_name == '__call__' and _is_norm(context.module):
      found.append((args[0].shape[3], size // args[0].shape[1]))
      return args[0]  # Only the shapes matter.
    return next_fun(*args, **kwargs)

  jax.eval_shape(lambda p, x: _run(generator, p, x, intercept), params,
                 jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32))
  return found


def window_with_statistics(generator, params, layers, window, mean, var, core_box):
  """G(window) with every normalisation layer normalised by the given
  statistics (`mean`, `var`: every layer's channels, concatenated in order),
  and each layer's input over the window's core (`core_box` y0, y1, x0, x1 in
  the window's pixels, on the grid of the coarsest layer) measured: returns
  (output, count (layers,), core mean, core M2 (both concatenated)).

  One call per tile, driven from outside (an exported ONNX file): pass after
  pass over the tiles, each pass merging the cores' measurements into the
  next pass's statistics, layer k's are the whole image's from pass k + 1 on
  (its input depends only on layers 0..k-1); started from the statistics of a
  thumbnail, a few passes come close.
  """
  offsets = [int(o) for o in np.cumsum([0] + [c for c, _ in layers])]
  counter = [0]
  counts, means, m2s = [], [], []
  # The box's four numbers by lax slices (jax2onnx converts no iteration over an array).
  box = [jax.lax.squeeze(jax.lax.slice(core_box, (i,), (i + 1,)), (0,)) for i in range(4)]

  def intercept(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != '__call__' or not _is_norm(module):
      return next_fun(*args, **kwargs)
    k = counter[0]
    counter[0] += 1
    x = args[0]
    count, core_mean, core_m2 = _core_measurement(x, layers[k][1], box)
    counts.append(count)
    means.append(core_mean)
    m2s.append(core_m2)
    lo, hi = offsets[k], offsets[k + 1]
    return _normalise(module, x, jax.lax.slice(mean, (lo,), (hi,)),
                      jax.lax.slice(var, (lo,), (hi,)))

  output = _run(generator, params, window, intercept)
  return output, jnp.stack(counts), jnp.concatenate(means), jnp.concatenate(m2s)


def own_statistics(generator, params, image):
  """Every normalisation layer's (mean, var) of `image`'s untiled translation,
  each concatenated over the layers (window_with_statistics's order): the
  statistics of a thumbnail."""
  record = _own_layer_statistics(generator, params, image)
  return (jnp.concatenate([mean for mean, _ in record]),
          jnp.concatenate([var for _, var in record]))


def one_program(generator, params):
  """(a generator of one input, its parameters) that TiledTranslation runs:
  `generator` itself, or the first step of one that translates in steps
  (the same program as every other step)."""
  if not generation.draws_noise(generator):
    return generator, params
  return (sb_models.TranslationStep(generator, 0),
          {'generator': params, 'z': jnp.zeros((1, 4 * generator.ngf), jnp.float32)})


def _translate_steps(generator, params, image: np.ndarray, tile: int,
                     stats_mode: str) -> np.ndarray:
  """translate_array for a generator that translates in steps from noise:
  the steps of generation's chain, each tiled with the whole image's
  statistics, x_t whole at the padded size (its padding is the chain's own,
  not a reflection) and the noise of the untiled translation."""
  height, width, channels = image.shape
  padded_h, padded_w = padded_size(generator, height, width)
  x = np.pad(image, ((0, padded_h - height), (0, padded_w - width), (0, 0)), mode='reflect')
  times = sb_models.time_grid(generator.num_timesteps)
  draws = sb_models.translation_draws(generator.seed, generator.nfe or generator.num_timesteps,
                                      x.shape, 4 * generator.ngf)
  predicted = None
  for step, (z, noise) in enumerate(draws):
    if step > 0:
      x = np.asarray(sb_models.bridge_step(x[None], predicted[None], step, times,
                                           generator.tau, noise))[0]
    predicted = translate_array(sb_models.TranslationStep(generator, step),
                                {'generator': params, 'z': z}, x, tile, stats_mode)
  return predicted[:height, :width]


def translate_array(generator, params, image: np.ndarray, tile: int,
                    stats_mode: str = 'exact') -> np.ndarray:
  """The tiled translation of an (H, W, C) float32 image in [-1, 1], whole in
  memory (tests, video frames): the same as generation.generate on it, padded
  to the multiple and cropped back, up to float rounding ('exact')."""
  if generation.draws_noise(generator):
    return _translate_steps(generator, params, image, tile, stats_mode)
  height, width, channels = image.shape

  def read_window(y0, y1, x0, x1):
    return image[np.ix_(reflect_indices(y0, y1, height), reflect_indices(x0, x1, width))]

  tiled = TiledTranslation(generator, params, height, width, channels, tile, read_window,
                           stats_mode)
  out = None
  for (y0, y1, x0, x1), y in tiled.outputs(tiled.statistics()):
    if out is None:
      out = np.empty((height, width, y.shape[-1]), np.float32)
    out[y0:y1, x0:x1] = y
  return out


def translate_image_tiled(generator, params, image: np.ndarray, tile: int, value_range=(),
                          stats_mode: str = 'exact') -> np.ndarray:
  """generation.translate_image, tile by tile: an (H, W, C) image of any
  pixel type -> its translation, of the same size and pixel type."""
  low, high = image_io.value_range(value_range, image.dtype)
  y = translate_array(generator, params, image_io.to_unit(image, low, high), tile, stats_mode)
  return image_io.from_unit(y, low, high, image.dtype)


def fitting_tile(generator, params, height: int, width: int, channels: int, what: str) -> int:
  """The largest of AUTO_TILES (or the smallest tile there is) whose program
  fits in the memory available; InsufficientMemoryError when none does."""
  generator, params = one_program(generator, params)
  smallest = min_tile(generator)
  candidates = [t for t in AUTO_TILES if t >= smallest] + [smallest]
  for tile in candidates:
    tiled = TiledTranslation(generator, params, height, width, channels, tile, None)
    try:
      tiled.check_fits(what)
      return tile
    except memory.InsufficientMemoryError as e:
      error = e
  raise error


# --- One compiled program for many sizes (the demo's buckets) --------------


def bucket_size(generator, height: int, width: int, bucket: int) -> tuple[int, int]:
  """The canvas an image of this size is translated on: each side rounded
  up to a multiple of `bucket` (itself a multiple of the generator's)."""
  multiple = models.generator_multiple(generator)
  if bucket < 1 or bucket % multiple:
    raise ValueError(f'--demo_buckets={bucket}: expected 0 (off) or a positive multiple of '
                     f'{multiple} (this generator\'s downsampling factor)')
  return _round_up(height, bucket), _round_up(width, bucket)


def _reflect_past(x, axis: int, valid, pad: int):
  """x, reflect-padded by `pad` at the canvas's edges, with the pixels past
  the image's `valid` extent along `axis` reflected at the image's edge, as
  the untiled generator pads (pixels farther out are never read)."""
  n = x.shape[axis]
  index = jnp.arange(n) - pad
  index = jnp.where(index >= valid, 2 * (valid - 1) - index, index) + pad
  return jnp.take(x, jnp.clip(index, 0, n - 1), axis=axis)


def _past_edges(x, valid_h, valid_w, mode: str):
  """x (1, h, w, C) with the pixels past the image's extent zeroed ('zero':
  what a convolution's zero padding sees untiled) or repeating the image's
  last row and column ('edge': what blur_upsample's padding sees)."""
  rows = jax.lax.broadcasted_iota(jnp.int32, x.shape, 1)
  cols = jax.lax.broadcasted_iota(jnp.int32, x.shape, 2)
  if mode == 'zero':
    return jnp.where((rows < valid_h) & (cols < valid_w), x, jnp.zeros_like(x))
  x = jnp.take(x, jnp.minimum(jnp.arange(x.shape[1]), valid_h - 1), axis=1)
  return jnp.take(x, jnp.minimum(jnp.arange(x.shape[2]), valid_w - 1), axis=2)


@functools.partial(jax.jit, static_argnums=0)
def _generate_on_canvas(generator, params, canvas, region):
  """G(canvas), computed as the untiled G of the image in the canvas's top
  left corner (`region` 0, h, 0, w: the image's padded size; an argument,
  not a shape, so every image of the canvas's size shares this program):
  every normalisation layer takes its statistics over the image's extent,
  and every layer that pads (a reflect-padded or zero-padded convolution, a
  transposed convolution, blur_upsample) sees past the image's edge what
  the untiled generator's padding puts there, not the canvas's pixels."""
  height = canvas.shape[1]

  def extent(rows: int):
    """The image's (height, width) in a feature map of `rows` rows."""
    factor = height // rows
    return region[1] // factor, region[3] // factor

  def on_the_image(next_fun, args, kwargs, module):
    x, rest = args[0], args[1:]
    if _is_norm(module):
      count, mean, m2 = _core_measurement(x, height // x.shape[1], region)
      return _normalise(module, x, mean, m2 / count)
    if isinstance(module, models.ConvTranspose):
      return next_fun(_past_edges(x, *extent(x.shape[1]), 'zero'), *rest, **kwargs)
    if isinstance(module, nn.Conv) and max(module.kernel_size) > 1:
      if np.asarray(module.padding).any():  # Zero padding of its own.
        return next_fun(_past_edges(x, *extent(x.shape[1]), 'zero'), *rest, **kwargs)
      # No padding of its own: its input was reflect-padded (models.reflect_pad).
      pad = (module.kernel_size[0] - 1) // 2
      valid_h, valid_w = extent(x.shape[1] - 2 * pad)
      x = _reflect_past(_reflect_past(x, 1, valid_h, pad), 2, valid_w, pad)
      return next_fun(x, *rest, **kwargs)
    return next_fun(*args, **kwargs)

  def intercept(next_fun, args, kwargs, context):
    if context.method_name != '__call__':
      return next_fun(*args, **kwargs)
    y = on_the_image(next_fun, args, kwargs, context.module)
    # Every feature map a module returns repeats the image's last row and
    # column past its edge, as blur_upsample's padding does untiled (what
    # elementwise functions then do keeps that; the layers above re-pad or
    # zero it for themselves).
    if isinstance(y, jax.Array) and y.ndim == 4 and height % y.shape[1] == 0:
      y = _past_edges(y, *extent(y.shape[1]), 'edge')
    return y

  return _run(generator, params, canvas, intercept)


# (generator, canvas shape) -> the compiled program; bounded as generation's
# cache is, for a page that serves for days.
_compiled_canvases = {}
_MAX_CANVASES = 32


def compile_canvas(generator, params, shape: tuple[int, int, int, int]):
  """_generate_on_canvas compiled for an NHWC canvas shape (once; checked
  to fit in memory, InsufficientMemoryError otherwise)."""
  key = (generator, tuple(shape))
  if key not in _compiled_canvases:
    compiled = _generate_on_canvas.lower(
        generator, params, jax.ShapeDtypeStruct(shape, jnp.float32),
        jax.ShapeDtypeStruct((4,), jnp.int32)).compile()
    memory.check_fits(compiled, f'translating on a {shape[2]}x{shape[1]} canvas',
                      'pass a smaller --demo_buckets, or 0')
    if len(_compiled_canvases) >= _MAX_CANVASES:
      _compiled_canvases.clear()
    _compiled_canvases[key] = compiled
  return _compiled_canvases[key]


def canvas_programs(generator, params, shape: tuple[int, int, int, int]) -> list:
  """Every program a canvas of `shape` needs, compiled (compile_canvas): the
  generator's, or for one that translates in steps each step's."""
  if not generation.draws_noise(generator):
    return [compile_canvas(generator, params, shape)]
  z = jnp.zeros((1, 4 * generator.ngf), jnp.float32)
  # A step's G(x, t, z) does not depend on the NFE or the seed: one program
  # per step for every choice of them.
  steps = generator.nfe or generator.num_timesteps
  generator = generator.clone(nfe=0, seed=0)
  return [compile_canvas(sb_models.TranslationStep(generator, step),
                         {'generator': params, 'z': z}, shape) for step in range(steps)]


def translate_image_in_bucket(generator, params, image: np.ndarray, bucket: int,
                              value_range=()) -> np.ndarray:
  """generation.translate_image, run on a canvas of bucket_size (the image
  reflected past its edges) so that every size in a bucket shares one
  compiled program (_generate_on_canvas): the untiled translation up to
  float rounding (the statistics' sums run over other shapes). A generator
  that translates in steps runs them one by one (as _translate_steps), with
  the noise drawn at the image's padded size, as untiled, inside the canvas.
  pix2pix's test-time dropout is drawn for the canvas: another draw."""
  height, width, channels = image.shape
  canvas_h, canvas_w = bucket_size(generator, height, width, bucket)
  low, high = image_io.value_range(value_range, image.dtype)
  canvas = image[np.ix_(reflect_indices(0, canvas_h, height),
                        reflect_indices(0, canvas_w, width))]
  x = image_io.to_unit(canvas, low, high)[None]
  padded_h, padded_w = padded_size(generator, height, width)
  region = np.array([0, padded_h, 0, padded_w], np.int32)
  programs = canvas_programs(generator, params, x.shape)
  if not generation.draws_noise(generator):
    y = programs[0](params, x, region)
  else:
    times = sb_models.time_grid(generator.num_timesteps)
    draws = sb_models.translation_draws(generator.seed, len(programs),
                                        (padded_h, padded_w, channels), 4 * generator.ngf)
    for step, (program, (z, noise)) in enumerate(zip(programs, draws)):
      if step > 0:
        noise = np.pad(noise, ((0, 0), (0, canvas_h - padded_h), (0, canvas_w - padded_w),
                               (0, 0)))
        x = sb_models.bridge_step(x, y, step, times, generator.tau, noise)
      y = program({'generator': params, 'z': z}, x, region)
  return image_io.from_unit(np.asarray(y)[0, :height, :width], low, high, image.dtype)
