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
import os

import numpy as np

from cyclegan_jax import curves
from cyclegan_jax import image_io
from cyclegan_jax import inference
from cyclegan_jax import storage
from cyclegan_jax.data import input_pipeline


def image_cell(page_dir: str, name: str, image) -> str:
  """Writes images/<name> (uint8, or floats in [-1, 1]; 8-bit RGB for viewing,
  whatever the channels); returns its table cell."""
  if image.dtype != np.uint8:
    image = input_pipeline.to_uint8(image)
  image_io.write_png_atomically(storage.join(page_dir, 'images', name),
                                image_io.for_viewing(image))
  return f'<td><img src="images/{name}"></td>'


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
                    f'<img src="images/{curves.PLOT_FILE}" alt="FID, KID and losses over steps">')

  title = html.escape(f'{os.path.basename(workdir)}, step {step}')
  page = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title>\n'
          '<style>td, th { padding: 2px 6px; font: 13px sans-serif; }</style></head>\n'
          f'<body><h1>{title}</h1>\n' + '\n'.join(sections) + '\n</body></html>\n')
  path = storage.join(page_dir, 'index.html')
  storage.write_text_atomically(path, page)
  return path
