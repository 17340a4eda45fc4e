"""A local page to try trained models (`python main.py --mode=demo`): upload or
paste an image, pick the workdir or sweep run, the direction, the checkpoint
step and, for a model that translates in steps (UNSB), the number of steps;
see the input and its translation side by side at the input's own size and
download the PNG.

A translation here is `--mode=translate`'s: the same restore and the same
translate.translate_file, so the PNG is bit for bit the one translate writes
(an image with a side over LARGE_SIDE goes through tiles of TILE pixels with
whole-image statistics, as `--mode=translate --tile=512` does, with its
progress shown). Programs are compiled once per padded input size (the
generator's multiple, as translate pads) and kept. With `buckets` (the flag
--demo_buckets=N) every size in a bucket (sides rounded up to a multiple of
N) shares one program instead: no compile for a new size, and a translation
within one grey level of translate's, not always equal to it
(tiling.translate_image_in_bucket). The sizes (or buckets) of the config's
crop and of the example images are compiled at start.

Gradio (the `demo` extra) serves it: analytics off, no share link, system
fonts, nothing fetched from the network."""

import dataclasses
import functools
import os
import socket
import struct
import tempfile

os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')  # Before gradio reads it.

import gradio as gr  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from PIL import Image  # pylint: disable=g-import-not-at-top,wrong-import-position

from cyclegan_jax import checkpoints  # pylint: disable=wrong-import-position
from cyclegan_jax import configuration  # pylint: disable=wrong-import-position
from cyclegan_jax import generation  # pylint: disable=wrong-import-position
from cyclegan_jax import image_io  # pylint: disable=wrong-import-position
from cyclegan_jax import inference  # pylint: disable=wrong-import-position
from cyclegan_jax import sweeps  # pylint: disable=wrong-import-position
from cyclegan_jax import tiled_io  # pylint: disable=wrong-import-position
from cyclegan_jax import tiling  # pylint: disable=wrong-import-position
from cyclegan_jax import translate  # pylint: disable=wrong-import-position

DEFAULT_HOST = '127.0.0.1'
DEFAULT_PORT = 7860
LARGE_SIDE = 1024  # Images with a longer side are translated in tiles ...
TILE = 512  # ... of this many pixels.
MAX_PIXELS = 64_000_000  # Larger uploads are refused: --mode=translate reads them by windows.
NEWEST = 'newest'
IMAGE_TYPES = ['.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp', '.webp']

# The two images at their own size (scrolling when larger than the page), the
# small ones not blurred.
CSS = """
.natural-size img { width: auto !important; height: auto !important; max-width: none !important;
                    max-height: none !important; object-fit: none !important;
                    image-rendering: pixelated; }
.natural-size .image-container, .natural-size .image-frame { overflow: auto; }
"""


def _upload_box(**kwargs) -> gr.Image:
  """gr.Image that hands over the uploaded file untouched: Gradio's own
  preprocessing opens it with Pillow, and a file that is no image fails
  there with a page of text; check_upload reads it instead and says in one
  line what is wrong. A pasted image arrives as data: Gradio writes it to a
  file. (Set on the instance: a subclass of a Gradio component makes Gradio
  write a .pyi file beside this module.)"""
  box = gr.Image(**kwargs)
  preprocess = box.preprocess
  box.preprocess = lambda payload: (str(payload.path) if payload is not None and payload.path
                                    else preprocess(payload))
  return box


@dataclasses.dataclass(frozen=True)
class Model:
  """A workdir, or one run of a sweep's workdir, as the page lists it."""
  label: str
  workdir: str
  run: str | None  # A sweep run's name; None for a workdir of one run.


def list_models(workdirs: list[str]) -> list[Model]:
  """Every model the workdirs hold: a workdir, or each run of a sweep."""
  models = []
  for workdir in workdirs:
    if not checkpoints.has_config(workdir):
      raise FileNotFoundError(f'--workdir={workdir}: no trained model there (no config.json)')
    config = configuration.load(workdir)
    name = os.path.basename(os.path.normpath(workdir)) or workdir
    if sweeps.is_sweep(config):
      models += [Model(f'{name} · {run.name}', workdir, run.name) for run in sweeps.runs(config)]
    else:
      models.append(Model(name, workdir, None))
  labels = [m.label for m in models]
  return [dataclasses.replace(m, label=f'{m.label} ({m.workdir})')
          if labels.count(m.label) > 1 else m for m in models]


@dataclasses.dataclass(frozen=True)
class Choices:
  """What the page offers for one model."""
  directions: list[str]
  steps: list[int]  # Its checkpoints, newest first.
  num_timesteps: int | None  # T of a model that translates in steps; None otherwise.
  default_nfe: int | None


def choices(model: Model) -> Choices:
  config = inference.load_config(model.workdir, model.run)
  directions = [name for _, name in inference.wanted(config, inference.ALL)]
  steps = sorted(checkpoints.saved_steps(model.workdir), reverse=True)
  module = inference.generator_module(config, directions[0])
  if not generation.draws_noise(module):
    return Choices(directions, steps, None, None)
  return Choices(directions, steps, module.num_timesteps, module.nfe or module.num_timesteps)


def _restored(model: Model, direction: str, step: int | None) -> inference.Restored:
  """restore, kept for the next request; 'newest' (None) is kept only while
  no newer checkpoint appears (a workdir still training)."""
  newest = max(checkpoints.saved_steps(model.workdir), default=None) if step is None else None
  return _restore_cached(model, direction, step, newest)


@functools.lru_cache(maxsize=8)
def _restore_cached(model: Model, direction: str, step: int | None,
                    newest_saved: int | None) -> inference.Restored:
  del newest_saved  # Only part of the cache's key.
  return inference.restore(model.workdir, direction, step, run=model.run)


def _generator(model: Model, direction: str, step: int | None,
               nfe: int | None) -> tuple[inference.Generator, object, int]:
  """(the generator, the config, its step); with `nfe` as translate's --nfe."""
  restored = _restored(model, direction, step)
  generator = restored.generator
  if nfe is not None:
    generator = dataclasses.replace(
        generator, module=inference.with_sampling(generator.module, restored.config, nfe))
  return generator, restored.config, restored.step


def _header(path: str) -> tuple[str, int, int] | None:
  """(Pillow's pixel mode, height, width) from the file's header, before any
  pixel is decoded; None for a file Pillow does not open (a TIFF that
  tifffile reads, or no image at all)."""
  try:
    with Image.open(path) as image:
      return image.mode, image.height, image.width
  except Image.DecompressionBombError:
    raise ValueError(f'{os.path.basename(path)}: more than {MAX_PIXELS / 1e6:.0f} megapixels, '
                     'more than this page takes; translate it with --mode=translate, which '
                     'reads and writes a large image a window at a time') from None
  except Exception:  # pylint: disable=broad-except  # Pillow raises many kinds.
    pass
  with open(path, 'rb') as f:  # Pillow refuses a PNG of no pixels: its header says so.
    head = f.read(24)
  if head[:8] == b'\x89PNG\r\n\x1a\n' and head[12:16] == b'IHDR':
    width, height = struct.unpack('>II', head[16:24])
    if not width or not height:
      return 'PNG', height, width
  return None


def _check_size(name: str, height: int, width: int) -> None:
  if height == 0 or width == 0:
    raise ValueError(f'{name}: an empty image ({width}x{height} pixels)')
  if height * width > MAX_PIXELS:
    raise ValueError(f'{name}: {width}x{height} pixels ({height * width / 1e6:.0f} megapixels) '
                     f'is more than this page takes ({MAX_PIXELS / 1e6:.0f}); translate it with '
                     '--mode=translate, which reads and writes a large image a window at a time')


def check_upload(path: str) -> tuple[int, int, str]:
  """(height, width, a note for the page or '') of an uploaded file; a
  ValueError (one line, naming the file) for what this page cannot take.
  The size is checked from the header, before a large file is decoded."""
  name = os.path.basename(path)
  mode, height, width = _header(path) or (None, None, None)
  if height is not None:
    _check_size(name, height, width)
  elif not path.lower().endswith(image_io.TIFF_EXTENSIONS):
    raise ValueError(f'{name}: not an image file this page can read (expected PNG, JPEG, '
                     'TIFF, BMP or WebP)')
  try:
    windows = tiled_io.open_image(path)
  except (image_io.BadImageError, OSError, ValueError) as e:
    raise ValueError(f'{name}: {str(e).replace(path + ": ", "").replace(path, name)}') from None
  try:
    height, width, dtype = windows.height, windows.width, windows.dtype
  finally:
    windows.close()
  _check_size(name, height, width)
  notes = []
  if np.dtype(dtype).itemsize > 1:
    notes.append(f'{8 * np.dtype(dtype).itemsize}-bit pixels: translated at that depth; the PNG '
                 'to download keeps it, the view shows 8 bits')
  if mode not in (None, 'L', 'LA', 'RGB', 'RGBA', 'I;16', 'I;16B', 'I;16L', 'I', 'F'):
    notes.append(f'{mode} pixels: converted to RGB before translating')
  if max(height, width) > LARGE_SIDE:
    notes.append(f'{width}x{height}: translated in {TILE}-pixel tiles with the whole image\'s '
                 f'statistics (as --mode=translate --tile={TILE})')
  return height, width, '; '.join(notes)


def _viewable(path: str, out_path: str) -> str:
  """An 8-bit PNG of an image for the page to show (browsers show neither
  TIFF nor every 16-bit file)."""
  image = image_io.read(path)
  if image.dtype != np.uint8:
    low, high = image_io.value_range((), image.dtype)
    image = image_io.from_unit(image_io.to_unit(image, low, high), 0, 255, np.uint8)
  image_io.write(out_path, image)
  return out_path


def translate_upload(models: dict, output_root: str, buckets: int, path, label, direction,
                     step, nfe, progress=gr.Progress(track_tqdm=True)):
  """The page's action: (input view, translation view, the PNG to download,
  a note). Bad input raises gr.Error: a message on the page, the server
  serving on."""
  if not path:
    raise gr.Error('Upload or paste an image first.')
  try:
    model = models[label]
    height, width, note = check_upload(path)
    want = choices(model)
    nfe = int(nfe) if want.num_timesteps and nfe else None
    generator, config, found = _generator(model, direction, None if step == NEWEST
                                          else int(step), nfe)
    progress(0, desc=f'{direction}, step {found}: {width}x{height}')
    folder = tempfile.mkdtemp(dir=output_root)
    stem = os.path.splitext(os.path.basename(path))[0]
    out_path = os.path.join(folder, f'{stem}_{direction}.png')
    tile = TILE if max(height, width) > LARGE_SIDE else None
    translate.translate_file(generator, path, out_path, config.data.value_range, tile,
                             bucket=buckets if buckets and tile is None else None)
    view_in = _viewable(path, os.path.join(folder, 'input.png'))
    view_out = _viewable(out_path, os.path.join(folder, 'translation.png'))
  except (ValueError, OSError, MemoryError, KeyError) as e:
    raise gr.Error(str(e).strip('"\'')) from None
  status = f'{model.label}, {direction}, step {found}' + (f', NFE {nfe}' if nfe else '')
  return view_in, view_out, out_path, status + (f'. {note}.' if note else '.')


def compile_at_start(model: Model, sizes: list[tuple[int, int]], buckets: int = 0) -> None:
  """Compiles the default generator of `model` for each (height, width), or
  each one's bucket, so that the first uploads of those sizes do not wait
  for XLA."""
  want = choices(model)
  generator, _, _ = _generator(model, want.directions[0], None, None)
  module, params, channels = generator.module, generator.params, generator.in_channels
  for height, width in sizes:
    if max(height, width) > LARGE_SIDE:
      continue
    if buckets:
      tiling.canvas_programs(module, params,
                             (1, *tiling.bucket_size(module, height, width, buckets), channels))
    else:
      generation.check_fits(module, params,
                            (1, *tiling.padded_size(module, height, width), channels))


def example_images(folder: str | None) -> list[str]:
  if not folder:
    return []
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'--demo_examples={folder}: no such folder')
  return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                if os.path.splitext(f)[1].lower() in IMAGE_TYPES)


def _nfe_slider(offered: Choices) -> dict:
  """The NFE slider's range and value, shown only for a model that
  translates in more than one step (a slider needs two values at least)."""
  steps = offered.num_timesteps or 1
  return {'minimum': 1, 'maximum': max(steps, 2), 'value': offered.default_nfe or 1,
          'visible': steps > 1}


def build(workdirs: list[str], examples_dir: str | None = None,
          output_root: str | None = None, buckets: int = 0) -> gr.Blocks:
  """The page, its models loaded and its first sizes compiled (a bad
  `buckets` refused there, by tiling.bucket_size)."""
  models = {m.label: m for m in list_models(workdirs)}
  examples = example_images(examples_dir)
  first = next(iter(models.values()))
  want = choices(first)
  config = inference.load_config(first.workdir, first.run)
  sizes = {(config.data.crop_size, config.data.crop_size)}
  for path in examples:
    height, width, _ = check_upload(path)
    sizes.add((height, width))
  compile_at_start(first, sorted(sizes), buckets)
  output_root = output_root or tempfile.mkdtemp(prefix='cyclegan_jax_demo_')
  with gr.Blocks(title='cyclegan_jax demo', analytics_enabled=False) as page:
    same = ('The PNG is the one `--mode=translate` writes.' if not buckets else
            f'Sizes are padded to multiples of {buckets} pixels (`--demo_buckets`): the PNG '
            'is `--mode=translate`\'s within one grey level.')
    gr.Markdown('## Translate an image\nUpload or paste an image, pick the model, and '
                f'press Translate. {same}')
    with gr.Row():
      image = _upload_box(type='filepath', image_mode=None, sources=['upload', 'clipboard'],
                       label='image', format='png')
      with gr.Column():
        model = gr.Dropdown(list(models), value=first.label, label='workdir or run')
        direction = gr.Dropdown(want.directions, value=want.directions[0], label='direction')
        step = gr.Dropdown([NEWEST, *map(str, want.steps)], value=NEWEST,
                           label='checkpoint step')
        nfe = gr.Slider(**_nfe_slider(want), step=1, label='steps (NFE)')
        button = gr.Button('Translate', variant='primary')
    status = gr.Markdown(elem_id='status')
    with gr.Row(elem_classes='natural-size'):
      shown_in = gr.Image(label='input', type='filepath', interactive=False, format='png')
      shown_out = gr.Image(label='translation', type='filepath', interactive=False,
                           format='png', elem_id='translation')
    download = gr.File(label='translation (PNG)', elem_id='download')
    if examples:
      gr.Examples([[p] for p in examples], inputs=[image])

    def picked(label):
      new = choices(models[label])
      return (gr.Dropdown(choices=new.directions, value=new.directions[0]),
              gr.Dropdown(choices=[NEWEST, *map(str, new.steps)], value=NEWEST),
              gr.Slider(**_nfe_slider(new)))

    model.change(picked, model, [direction, step, nfe], api_name=False)
    button.click(functools.partial(translate_upload, models, output_root, buckets),
                 [image, model, direction, step, nfe], [shown_in, shown_out, download, status],
                 api_name='translate')
  return page


def check_port(host: str, port: int) -> None:
  """An OSError (one line) when `port` is taken, before anything is built."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
    try:
      probe.bind((host, port))
    except OSError as e:
      raise OSError(f'--port={port}: cannot serve on {host}:{port} ({e.strerror or e}); '
                    'another program uses it: choose another with --port=N') from None


def serve(workdirs: list[str], host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          examples_dir: str | None = None, block: bool = True, buckets: int = 0) -> gr.Blocks:
  """Serves the page at http://host:port/ (blocks unless `block` is False)."""
  check_port(host, port)
  page = build(workdirs, examples_dir, buckets=buckets)
  page.queue(default_concurrency_limit=1)  # One translation at a time: one device.
  # System fonts: the default theme's web font would be fetched from the network.
  theme = gr.themes.Default(font=['system-ui', 'sans-serif'], font_mono=['monospace'])
  page.launch(server_name=host, server_port=port, share=False, show_error=True,
              inbrowser=False, prevent_thread_lock=not block, quiet=not block, ssr_mode=False,
              theme=theme, css=CSS)
  return page
