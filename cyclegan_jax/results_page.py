"""The official test page: real / translated / reconstructed test images of
both directions in one HTML file that opens from disk.

  python main.py --mode=test --workdir=runs/h2z [--num_test=50] [--step=N]

writes `<workdir>/results/<step>/index.html` and its PNGs under `images/`,
with the test transform of the stored config (resize to crop_size, no flip).
"""

import html
import os

from PIL import Image

from cyclegan_jax import checkpoints
from cyclegan_jax import input_pipeline
from cyclegan_jax import models
from cyclegan_jax import translate

# (test split, generator there, generator back, column titles), as the
# official page's real_A | fake_B | rec_A and real_B | fake_A | rec_B.
DIRECTIONS = (('testA', 'gen_ab', 'gen_ba', ('real A', 'A→B', 'A→B→A')),
              ('testB', 'gen_ba', 'gen_ab', ('real B', 'B→A', 'B→A→B')))


def _label(source, index: int) -> str:
  files = getattr(source, 'files', None)  # Folder sources know their file names.
  return os.path.basename(files[index]) if files else f'#{index}'


def write_results_page(workdir: str, num_test: int = 50, step: int | None = None) -> str:
  """Translates the first `num_test` test images of each domain and writes
  the page; returns the path of index.html."""
  if num_test < 1:
    raise ValueError(f'--num_test={num_test}: expected at least 1')
  config = checkpoints.load_config(workdir)
  step, params = checkpoints.load_params(workdir, ('gen_ab', 'gen_ba'), step)
  sources = input_pipeline.open_sources(config.data)
  generator = models.create_generator(config.model)
  page_dir = os.path.join(os.path.abspath(workdir), 'results', str(step))
  os.makedirs(os.path.join(page_dir, 'images'), exist_ok=True)

  sections = []
  for split, there, back, titles in DIRECTIONS:
    source = sources[split]
    rows = []
    for i in range(min(num_test, len(source))):
      real = input_pipeline.preprocess(source[i], config.data, None)
      fake, rec = translate.translate_and_back(generator, params[there], params[back],
                                               real[None])
      cells = []
      for kind, image in (('real', real), ('fake', fake[0]), ('rec', rec[0])):
        name = f'{split}_{i:04d}_{kind}.png'
        Image.fromarray(input_pipeline.to_uint8(image)).save(
            os.path.join(page_dir, 'images', name))
        cells.append(f'<td><img src="images/{name}"></td>')
      rows.append(f'<tr><td>{html.escape(_label(source, i))}</td>{"".join(cells)}</tr>')
    header = ''.join(f'<th>{html.escape(t)}</th>' for t in ('image', *titles))
    sections.append(f'<h2>{split}: {len(rows)} images</h2>\n<table>\n<tr>{header}</tr>\n'
                    + '\n'.join(rows) + '\n</table>')

  title = html.escape(f'{os.path.basename(os.path.abspath(workdir))}, step {step}')
  page = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title>\n'
          '<style>td, th { padding: 2px 6px; font: 13px sans-serif; }</style></head>\n'
          f'<body><h1>{title}</h1>\n' + '\n'.join(sections) + '\n</body></html>\n')
  path = os.path.join(page_dir, 'index.html')
  with open(path, 'w', encoding='utf-8') as f:
    f.write(page)
  return path
