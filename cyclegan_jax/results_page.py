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
from cyclegan_jax import image_io
from cyclegan_jax import input_pipeline
from cyclegan_jax import models
from cyclegan_jax import paired_data
from cyclegan_jax import translate

# (test split, generator there, generator back, column titles), as the
# official page's real_A | fake_B | rec_A and real_B | fake_A | rec_B.
DIRECTIONS = (('testA', 'gen_ab', 'gen_ba', ('real A', 'A→B', 'A→B→A')),
              ('testB', 'gen_ba', 'gen_ab', ('real B', 'B→A', 'B→A→B')))


def _label(source, index: int, direction: str | None = None) -> str:
  files = getattr(source, 'files', None)  # Folder sources know their file names.
  if not files:
    return f'#{index}'
  name = files[index]
  if isinstance(name, tuple):  # A pair of files matched by name: the input's.
    name = paired_data.input_and_target(name, direction)[0]
  return os.path.basename(name)


def _save(page_dir: str, name: str, image) -> str:
  """Writes images/<name> (uint8, or floats in [-1, 1]; 8-bit RGB for viewing,
  whatever the channels); returns its table cell."""
  if image.dtype != np.uint8:
    image = input_pipeline.to_uint8(image)
  Image.fromarray(image_io.for_viewing(image)).save(os.path.join(page_dir, 'images', name))
  return f'<td><img src="images/{name}"></td>'


def _section(heading: str, titles, rows) -> str:
  header = ''.join(f'<th>{html.escape(t)}</th>' for t in ('image', *titles))
  return (f'<h2>{html.escape(heading)}</h2>\n<table>\n<tr>{header}</tr>\n'
          + '\n'.join(rows) + '\n</table>')


def _cyclegan_sections(config, params, generators, page_dir: str, num_test: int) -> list[str]:
  sources = input_pipeline.open_sources(config.data, input_pipeline.domain_channels(config))
  sections = []
  for split, there, back, titles in DIRECTIONS:
    source = sources[split]
    rows = []
    for i in range(min(num_test, len(source))):
      real = input_pipeline.preprocess(source[i], config.data, None)
      fake, rec = translate.translate_and_back(generators[there], generators[back],
                                               params[there], params[back], real[None])
      cells = [_save(page_dir, f'{split}_{i:04d}_{kind}.png', image)
               for kind, image in (('real', real), ('fake', fake[0]), ('rec', rec[0]))]
      rows.append(f'<tr><td>{html.escape(_label(source, i))}</td>{"".join(cells)}</tr>')
    sections.append(_section(f'{split}: {len(rows)} images', titles, rows))
  return sections


def _pix2pix_section(config, params, generators, page_dir: str, num_test: int) -> str:
  """input | output | target of the first num_test test pairs (the official
  page's real_A | fake_B | real_B), in config.data.direction. Translated as
  --mode=translate does, one image per forward pass (translate.translate_image):
  batch norm normalises with the statistics of the batch it is given, at test
  time too, and the official test script runs batch 1."""
  network, direction = translate.network_for(config, None)
  titles = (f'input ({direction[0]})', f'{direction} output', f'target ({direction[-1]})')
  test = paired_data.open_paired_sources(
      config.data, input_pipeline.domain_channels(config))['test']
  rows = []
  for i in range(min(num_test, len(test))):
    pair = [input_pipeline.preprocess(image, config.data, None) for image in test[i]]
    x, y = paired_data.input_and_target(pair, direction)
    # Floats in [-1, 1] in and out (value range (-1, 1)): full precision.
    output = translate.translate_image(generators[network], params[network], x, (-1.0, 1.0))
    cells = [_save(page_dir, f'test_{i:04d}_{kind}.png', image)
             for kind, image in (('input', x), ('output', output), ('target', y))]
    rows.append(f'<tr><td>{html.escape(_label(test, i, direction))}</td>{"".join(cells)}</tr>')
  return _section(f'test: {len(rows)} pairs, {direction}', titles, rows)


def write_results_page(workdir: str, num_test: int = 50, step: int | None = None) -> str:
  """Translates the first `num_test` test images of each domain (pix2pix:
  test pairs) and writes the page; returns the path of index.html."""
  if num_test < 1:
    raise ValueError(f'--num_test={num_test}: expected at least 1')
  config = checkpoints.load_config(workdir)
  pix2pix = config.model.get('kind', 'cyclegan') == 'pix2pix'
  networks = (translate.network_for(config, None)[0],) if pix2pix else ('gen_ab', 'gen_ba')
  step, params = checkpoints.load_params(workdir, networks, step)
  generators = models.create_generators(config.model)
  page_dir = os.path.join(os.path.abspath(workdir), 'results', str(step))
  os.makedirs(os.path.join(page_dir, 'images'), exist_ok=True)
  if pix2pix:
    sections = [_pix2pix_section(config, params, generators, page_dir, num_test)]
  else:
    sections = _cyclegan_sections(config, params, generators, page_dir, num_test)

  title = html.escape(f'{os.path.basename(os.path.abspath(workdir))}, step {step}')
  page = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title>\n'
          '<style>td, th { padding: 2px 6px; font: 13px sans-serif; }</style></head>\n'
          f'<body><h1>{title}</h1>\n' + '\n'.join(sections) + '\n</body></html>\n')
  path = os.path.join(page_dir, 'index.html')
  with open(path, 'w', encoding='utf-8') as f:
    f.write(page)
  return path
