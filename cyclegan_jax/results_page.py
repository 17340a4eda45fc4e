"""The official test page in one HTML file that opens from disk: CycleGAN's
real / translated / reconstructed test images of both directions, or
pix2pix's input / output / target of its test pairs.

  python main.py --mode=test --workdir=runs/h2z [--num_test=50] [--step=N]

writes `<workdir>/results/<step>/index.html` and its PNGs under `images/`,
with the test transform of the stored config (resize to crop_size, no flip).
"""

import html
import os

import numpy as np
from PIL import Image

from cyclegan_jax import checkpoints
from cyclegan_jax import families
from cyclegan_jax import image_io
from cyclegan_jax import input_pipeline
from cyclegan_jax import paired_data


def label(source, index: int, direction: str | None = None) -> str:
  """The name of a test image's row: its file's (a pair's input file's)."""
  files = getattr(source, 'files', None)  # Folder sources know their file names.
  if not files:
    return f'#{index}'
  name = files[index]
  if isinstance(name, tuple):  # A pair of files matched by name: the input's.
    name = paired_data.input_and_target(name, direction)[0]
  return os.path.basename(name)


_label = label  # The name the tests know it by.


def image_cell(page_dir: str, name: str, image) -> str:
  """Writes images/<name> (uint8, or floats in [-1, 1]; 8-bit RGB for viewing,
  whatever the channels); returns its table cell."""
  if image.dtype != np.uint8:
    image = input_pipeline.to_uint8(image)
  Image.fromarray(image_io.for_viewing(image)).save(os.path.join(page_dir, 'images', name))
  return f'<td><img src="images/{name}"></td>'


def section(heading: str, titles, rows) -> str:
  header = ''.join(f'<th>{html.escape(t)}</th>' for t in ('image', *titles))
  return (f'<h2>{html.escape(heading)}</h2>\n<table>\n<tr>{header}</tr>\n'
          + '\n'.join(rows) + '\n</table>')


def write_results_page(workdir: str, num_test: int = 50, step: int | None = None) -> str:
  """Translates the first `num_test` test images of each domain (pix2pix:
  test pairs) and writes the page; returns the path of index.html."""
  if num_test < 1:
    raise ValueError(f'--num_test={num_test}: expected at least 1')
  config = checkpoints.load_config(workdir)
  family = families.get(config)
  generators = family.create_generators(config.model)
  step, params = checkpoints.load_params(workdir, tuple(generators), step)
  page_dir = os.path.join(os.path.abspath(workdir), 'results', str(step))
  os.makedirs(os.path.join(page_dir, 'images'), exist_ok=True)
  sections = family.results_sections(config, params, generators, page_dir, num_test)

  title = html.escape(f'{os.path.basename(os.path.abspath(workdir))}, step {step}')
  page = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title>\n'
          '<style>td, th { padding: 2px 6px; font: 13px sans-serif; }</style></head>\n'
          f'<body><h1>{title}</h1>\n' + '\n'.join(sections) + '\n</body></html>\n')
  path = os.path.join(page_dir, 'index.html')
  with open(path, 'w', encoding='utf-8') as f:
    f.write(page)
  return path
