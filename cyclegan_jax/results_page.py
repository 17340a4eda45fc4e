"""The official test page in one HTML file that opens from disk: CycleGAN's
real / translated / reconstructed test images of both directions, or
pix2pix's input / output / target of its test pairs.

  python main.py --mode=test --workdir=runs/h2z [--num_test=50] [--step=N]

writes `<workdir>/results/<step>/index.html` and its PNGs under `images/`,
with the test transform of the stored config (resize to crop_size, no flip),
and, when the workdir was evaluated, its plot of FID, KID and the losses
over steps (eval/curves.png). The workdir may be on Cloud Storage
(gs://...): the page and its images are written there (through storage).
"""

import html
import math
import os

import numpy as np

from cyclegan_jax import curves
from cyclegan_jax import image_io
from cyclegan_jax import inference
from cyclegan_jax import storage
from cyclegan_jax.data import input_pipeline

# The one stylesheet of the results page and the report (report.py): a
# sans-serif font, tables ruled and aligned (numbers right), and small images
# scaled up by whole factors without blurring (image_tag sets their size).
STYLE = """\
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif;
       color: #1f2328; margin: 24px; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; } h3 { font-size: 14px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #c8ccd1; padding: 3px 8px; text-align: left; vertical-align: middle; }
th { background: #eef0f3; font-weight: 600; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
td.image { padding: 2px; }
td img { display: block; image-rendering: pixelated; }
img.plot { max-width: 100%; height: auto; }
.warning { color: #a40000; }
"""
MIN_IMAGE_WIDTH = 128  # Narrower images are shown this wide at least.


def image_tag(src: str, alt: str, shape) -> str:
  """<img> of an image of `shape` (H, W, ...), shown at a whole multiple of
  its size at least MIN_IMAGE_WIDTH wide (32 px: 4x, 128 px or more: 1x)."""
  height, width = shape[:2]
  scale = max(1, math.ceil(MIN_IMAGE_WIDTH / width))
  return (f'<img src="{html.escape(src)}" alt="{html.escape(alt)}" width="{width * scale}" '
          f'height="{height * scale}">')


def document(title: str, body: list[str]) -> str:
  """A whole HTML page with STYLE: `title` (plain text) as its title and
  heading, then the `body` parts (HTML)."""
  title = html.escape(title)
  return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title>\n'
          f'<style>\n{STYLE}</style></head>\n<body>\n<h1>{title}</h1>\n'
          + '\n'.join(body) + '\n</body></html>\n')


def image_cell(page_dir: str, name: str, image) -> str:
  """Writes images/<name> (uint8, or floats in [-1, 1]; 8-bit RGB for viewing,
  whatever the channels); returns its table cell."""
  if image.dtype != np.uint8:
    image = input_pipeline.to_uint8(image)
  image = image_io.for_viewing(image)
  image_io.write_png_atomically(storage.join(page_dir, 'images', name), image)
  return f'<td class="image">{image_tag(f"images/{name}", name, image.shape)}</td>'


def section(page_dir: str, table) -> str:
  """A family's table (families.common.ResultsTable) as HTML, its images
  written under images/."""
  header = ''.join(f'<th>{html.escape(t)}</th>' for t in ('image', *table.titles))
  rows = [f'<tr><td>{html.escape(label)}</td>'
          f'{"".join(image_cell(page_dir, name, image) for name, image in cells)}</tr>'
          for label, cells in table.rows]
  return (f'<h2>{html.escape(table.heading)}</h2>\n<table>\n<tr>{header}</tr>\n'
          + '\n'.join(rows) + '\n</table>')


def write_results_page(workdir: str, num_test: int = 50, step: int | None = None,
                       run: str | None = None, nfe: int | None = None,
                       seed: int | None = None) -> str:
  """Translates the first `num_test` test images of each domain (pix2pix:
  test pairs) and writes the page; returns the path of index.html. `run`: a
  sweep's run, whose page goes to its folder W/runs/<name>/. `nfe`, `seed`:
  of a model that translates in steps (UNSB: its page shows NFE 1..nfe side
  by side)."""
  if num_test < 1:
    raise ValueError(f'--num_test={num_test}: expected at least 1')
  restored = inference.restore(workdir, inference.ALL, step, run=run, nfe=nfe, seed=seed)
  workdir = inference.output_folder(workdir, run)
  step = restored.step
  workdir = storage.absolute(workdir)
  page_dir = storage.join(workdir, 'results', str(step))
  storage.makedirs(storage.join(page_dir, 'images'))
  storage.check_writable(page_dir, page_dir)
  tables = restored.family.results_tables(restored.config, restored.params, restored.modules,
                                          num_test)
  sections = [section(page_dir, table) for table in tables]
  plot = storage.join(workdir, 'eval', curves.PLOT_FILE)
  if storage.isfile(plot):  # Evaluated during training (or by --mode=evaluate).
    storage.copy(plot, storage.join(page_dir, 'images', curves.PLOT_FILE))
    sections.append(f'<h2>FID, KID and losses over training</h2>\n'
                    f'<img src="images/{curves.PLOT_FILE}" alt="FID, KID and losses over steps" '
                    'class="plot">')
  page = document(f'{os.path.basename(workdir)}, step {step}', sections)
  path = storage.join(page_dir, 'index.html')
  storage.write_text_atomically(path, page)
  return path
