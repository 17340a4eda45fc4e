"""One report across workdirs: their FID/KID side by side, with what they mean.

  python main.py --mode=report --workdirs=runs/h2z,runs/h2z_cut --output=report

writes `report/index.html` (opens from disk) and `report/report.md`: per
workdir (a sweep: per run) and direction, the final and the best FID and KID
with their steps; the protocol each score was computed under (FID mode, test
data, Inception weights); the family and the config fields in which the
workdirs differ; per group of runs that differ only in their seed, mean ±
std; the FID and KID curves of all of them overlaid; a row of translations
of the same test images from each; the software that wrote the report.

Scores of different protocols are never averaged together, and the tables
say when their protocols differ. Workdirs and the output folder may be on
Cloud Storage (gs://...): everything is read and written through storage.
"""

import dataclasses
import html
import importlib.metadata
import io
import json
import os
import platform
import statistics

from matplotlib.figure import Figure
import ml_collections
import numpy as np

from cyclegan_jax import configuration
from cyclegan_jax import curves
from cyclegan_jax import evaluate
from cyclegan_jax import image_io
from cyclegan_jax import inference
from cyclegan_jax import storage
from cyclegan_jax import sweeps
from cyclegan_jax.data import input_pipeline

NUM_SAMPLES = 4  # Test images per direction in the row of translations.
PACKAGES = ('cyclegan_jax', 'jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy',
            'scipy', 'pillow', 'tensorflow-datasets')
# Config fields that name where things are, not what was trained.
LOCATION_FIELDS = ('data.cache_dir', 'data.tfds_data_dir', 'eval.inception_weights')


@dataclasses.dataclass
class Entry:
  """One trained run: a workdir, or one run of a sweep's workdir."""
  label: str  # The workdir's name (a sweep's run: name/run).
  workdir: str
  run: str | None  # A sweep's run index, for inference.restore.
  folder: str  # Where its eval/ is.
  config: ml_collections.ConfigDict  # The run's config.
  history: dict  # curves.eval_history.
  protocol: dict  # Of its latest evaluation ({} when not recorded).


def open_entries(workdirs: list[str]) -> list[Entry]:
  """The runs of the workdirs (a sweep's expanded into its runs); one-line
  errors for a missing workdir and for one without evaluations."""
  if not workdirs:
    raise ValueError('--workdirs: expected one or more workdirs, separated by commas')
  entries = []
  for workdir in workdirs:
    workdir = storage.absolute(os.path.expanduser(workdir))
    if not storage.isfile(storage.join(workdir, 'config.json')):
      raise FileNotFoundError(f'{workdir}: not a workdir (no config.json)')
    config = configuration.load(workdir)
    name = os.path.basename(workdir)
    runs = sweeps.runs(config)
    for run in runs or [None]:
      folder = workdir if run is None else storage.join(workdir, run.folder)
      history = curves.eval_history(folder)
      if not history:
        raise ValueError(
            f'{folder}: no evaluation (eval/step_*.json): score it with python main.py '
            f'--mode=evaluate --workdir={workdir}{"" if run is None else f" --run={run.index}"}, '
            'or train with --config.eval.every_steps')
      latest = evaluate.latest_scores(folder) or {}
      entries.append(Entry(
          label=name if run is None else f'{name}/{run.name}', workdir=workdir,
          run=None if run is None else str(run.index), folder=folder,
          config=config if run is None else sweeps.run_config(config, run),
          history=history, protocol=latest.get('protocol', {})))
  return entries


def _flat(tree: dict, prefix: str = '') -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flat(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = tuple(value) if isinstance(value, list) else value
  return flat


def config_differences(entries: list[Entry]) -> list[dict]:
  """Per entry, {field: value} of the config fields whose values differ
  between the entries (not sweep definitions or file locations)."""
  flats = [{k: v for k, v in _flat(e.config.to_dict()).items()
            if not k.startswith('sweep.') and k not in LOCATION_FIELDS} for e in entries]
  fields = sorted({k for flat in flats for k in flat})
  differing = [k for k in fields if len({repr(flat.get(k)) for flat in flats}) > 1]
  return [{k: flat.get(k) for k in differing} for flat in flats]


def _protocol_text(protocol: dict) -> str:
  if not protocol:
    return 'not recorded (evaluated by an older version)'
  data = protocol.get('test_data', {})
  count = data.get('num_images') or 'all'
  return (f'{protocol.get("fid_mode")} FID; {data.get("source")} {data.get("split")} split, '
          f'{data.get("size")} px, {count} images per domain; Inception weights sha256 '
          f'{protocol.get("inception_weights_sha256", "?")[:12]}…; KID over '
          f'{protocol.get("kid_subsets")} subsets of up to {protocol.get("kid_subset_size")}')


def _scores(entry: Entry, direction: str) -> dict | None:
  """Final and best FID and KID of one direction, with their steps."""
  entries = entry.history.get(direction)
  if not entries:
    return None
  step, last = entries[-1]
  best_fid = min(entries, key=lambda e: e[1]['fid'])
  best_kid = min(entries, key=lambda e: e[1]['kid_mean'])
  return {'final_step': step, 'final_fid': last['fid'], 'final_kid': last['kid_mean'],
          'best_fid': best_fid[1]['fid'], 'best_fid_step': best_fid[0],
          'best_kid': best_kid[1]['kid_mean'], 'best_kid_step': best_kid[0],
          'num_fake': last.get('num_fake'), 'num_real': last.get('num_real')}


def _mean_std(values: list[float]) -> str:
  if len(values) < 2:
    return f'{values[0]:.4g}'
  return f'{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}'


def summarise(entries: list[Entry]) -> dict:
  """Everything the report shows, as data (also written as report.json)."""
  differences = config_differences(entries)
  protocols = []  # Distinct protocols, numbered P1, P2, ... in order of appearance.
  for entry in entries:
    if entry.protocol not in protocols:
      protocols.append(entry.protocol)
  directions = [d for d, _, _ in evaluate.DIRECTIONS if any(d in e.history for e in entries)]
  rows = []
  for entry, diff in zip(entries, differences):
    for direction in directions:
      scores = _scores(entry, direction)
      if scores:
        rows.append({'run': entry.label, 'family': entry.config.model.kind,
                     'direction': direction,
                     'protocol': f'P{protocols.index(entry.protocol) + 1}',
                     'differences': diff, **scores})
  # Runs alike in all but their seed, under one protocol: mean ± std.
  groups = {}
  for row in rows:
    key = (row['family'], row['direction'], row['protocol'],
           json.dumps({k: v for k, v in row['differences'].items() if k != 'seed'},
                      sort_keys=True, default=str))
    groups.setdefault(key, []).append(row)
  seed_groups = []
  for (family, direction, protocol, diff), members in groups.items():
    if len(members) > 1:
      seed_groups.append({
          'family': family, 'direction': direction, 'protocol': protocol,
          'differences': json.loads(diff), 'runs': [m['run'] for m in members],
          **{key: _mean_std([m[key] for m in members])
             for key in ('final_fid', 'best_fid', 'final_kid', 'best_kid')}})
  # Models that translate in steps (UNSB): FID after each step at the last
  # evaluation.
  nfe_rows = []
  for entry in entries:
    for direction in directions:
      step, last = (entry.history.get(direction) or [(None, {})])[-1]
      if 'by_nfe' in last:
        nfe_rows.append({'run': entry.label, 'direction': direction, 'step': step,
                         'fid_by_nfe': {n: s['fid'] for n, s in last['by_nfe'].items()},
                         'best_nfe': last['best_nfe']})
  return {'rows': rows, 'seed_groups': seed_groups, 'nfe_rows': nfe_rows,
          'differences': {'fields': list(differences[0]) if differences else [],
                          'runs': {e.label: d for e, d in zip(entries, differences)}},
          'protocols': {f'P{i + 1}': _protocol_text(p) for i, p in enumerate(protocols)},
          'versions': versions()}


def versions() -> dict:
  """The software writing the report (a workdir does not record its own)."""
  found = {'python': platform.python_version(), 'platform': platform.platform()}
  for package in PACKAGES:
    try:
      found[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      pass
  return found


def _value_text(value) -> str:
  return '—' if value is None else str(value)


def markdown(summary: dict) -> str:
  """The tables of the report as Markdown."""
  lines = ['| run | family | direction | final FID (step) | best FID (step) | final KID | '
           'best KID (step) | protocol |', '|' + '---|' * 8]
  for r in summary['rows']:
    lines.append(
        f'| {r["run"]} | {r["family"]} | {r["direction"]} | {r["final_fid"]:.4g} '
        f'({r["final_step"]}) | {r["best_fid"]:.4g} ({r["best_fid_step"]}) | '
        f'{r["final_kid"]:.4g} | {r["best_kid"]:.4g} ({r["best_kid_step"]}) | '
        f'{r["protocol"]} |')
  if summary['seed_groups']:
    lines += ['', 'Runs that differ only in their seed (mean ± std):', '',
              '| runs | family | direction | final FID | best FID | final KID | best KID | '
              'protocol |', '|' + '---|' * 8]
    for g in summary['seed_groups']:
      lines.append(f'| {", ".join(g["runs"])} | {g["family"]} | {g["direction"]} | '
                   f'{g["final_fid"]} | {g["best_fid"]} | {g["final_kid"]} | {g["best_kid"]} '
                   f'| {g["protocol"]} |')
  if summary.get('nfe_rows'):
    lines += ['', 'FID after each step (NFE) at the last evaluation:', '']
    lines += _nfe_table(summary['nfe_rows'], lambda cells: '| ' + ' | '.join(cells) + ' |',
                        markdown_rule=True)
  differences = summary['differences']
  if differences['fields']:
    runs = list(differences['runs'])
    lines += ['', 'Config fields that differ:', '', '| field | ' + ' | '.join(runs) + ' |',
              '|' + '---|' * (len(runs) + 1)]
    for field in differences['fields']:
      lines.append(f'| {field} | ' + ' | '.join(
          _value_text(differences['runs'][run][field]) for run in runs) + ' |')
  lines += ['', 'Protocols:', '']
  lines += [f'- {name}: {text}' for name, text in summary['protocols'].items()]
  if len(summary['protocols']) > 1:
    lines += ['', f'These scores come from {len(summary["protocols"])} different protocols: '
                  'compare scores of one protocol only.']
  lines += ['', 'Written with: ' + ', '.join(f'{k} {v}' for k, v in summary['versions'].items())]
  return '\n'.join(lines) + '\n'


def _nfe_table(rows: list[dict], line, markdown_rule: bool = False) -> list:
  """The FID-by-NFE table, each row (header first) through `line(cells)`."""
  most = max(len(r['fid_by_nfe']) for r in rows)
  header = ['run', 'direction', 'step', *(f'NFE {n}' for n in range(1, most + 1)), 'best NFE']
  lines = [line(header)] + (['|' + '---|' * len(header)] if markdown_rule else [])
  for r in rows:
    fids = [f'{r["fid_by_nfe"][str(n)]:.4g}' if str(n) in r['fid_by_nfe'] else '—'
            for n in range(1, most + 1)]
    lines.append(line([r['run'], r['direction'], str(r['step']), *fids, str(r['best_nfe'])]))
  return lines


def overlay_plot(entries: list[Entry]) -> Figure:
  """FID and KID over steps of every entry, one panel per direction and score."""
  directions = [d for d, _, _ in evaluate.DIRECTIONS if any(d in e.history for e in entries)]
  figure = Figure(figsize=(5 * len(directions), 7), layout='constrained')
  axes = np.asarray(figure.subplots(2, len(directions), squeeze=False))
  for column, direction in enumerate(directions):
    for row, (key, label) in enumerate((('fid', 'FID'), ('kid_mean', 'KID'))):
      axis = axes[row, column]
      for k, entry in enumerate(entries):
        points = entry.history.get(direction)
        if points:
          axis.plot([s for s, _ in points], [v[key] for _, v in points], marker='.',
                    color=f'C{k % 10}', label=entry.label)
      axis.set_title(f'{label} {direction}')
      axis.set_xlabel('step')
      axis.grid(alpha=0.3)
      axis.legend(fontsize=7)
  return figure


def _save(image: np.ndarray, path: str) -> None:
  image_io.write_png_atomically(path, image_io.for_viewing(image))


def sample_rows(entries: list[Entry], image_dir: str) -> dict:
  """{direction: [(label, [image file names])]}: the first NUM_SAMPLES test
  inputs (a row per distinct set of inputs) and each entry's translations of
  them, at its latest checkpoint."""
  rows = {}
  inputs_seen = {}
  for k, entry in enumerate(entries):
    restored = inference.restore(entry.workdir, inference.ALL, run=entry.run)
    scored = evaluate.scored_images(restored.config, NUM_SAMPLES)
    for direction, network in evaluate.directions(restored.config):
      inputs = scored[direction][0]
      fake = evaluate.translate_images(restored.modules[network], restored.params[network],
                                       inputs, 1)
      direction_rows = rows.setdefault(direction, [])
      known = inputs_seen.setdefault(direction, [])
      if not any(x.shape == inputs.shape and np.array_equal(x, inputs) for x in known):
        known.append(inputs)
        names = []
        for i, image in enumerate(inputs):
          names.append(f'{direction}_input{len(known)}_{i}.png')
          _save(input_pipeline.to_uint8(image), storage.join(image_dir, names[-1]))
        label = 'test input' if len(known) == 1 else f'test input ({entry.label})'
        direction_rows.append((label, names))
      names = []
      for i, image in enumerate(fake):
        names.append(f'{direction}_run{k}_{i}.png')
        _save(image, storage.join(image_dir, names[-1]))
      direction_rows.append((f'{entry.label} (step {restored.step})', names))
  return rows


def _html_table(header: list[str], rows: list[list[str]]) -> str:
  head = ''.join(f'<th>{html.escape(h)}</th>' for h in header)
  body = '\n'.join('<tr>' + ''.join(f'<td>{html.escape(str(c))}</td>' for c in row) + '</tr>'
                   for row in rows)
  return f'<table>\n<tr>{head}</tr>\n{body}\n</table>'


def page(summary: dict, samples: dict, title: str) -> str:
  """The HTML page (images under images/)."""
  parts = [f'<h1>{html.escape(title)}</h1>', '<h2>Scores</h2>', _html_table(
      ['run', 'family', 'direction', 'final FID (step)', 'best FID (step)', 'final KID',
       'best KID (step)', 'protocol'],
      [[r['run'], r['family'], r['direction'], f'{r["final_fid"]:.4g} ({r["final_step"]})',
        f'{r["best_fid"]:.4g} ({r["best_fid_step"]})', f'{r["final_kid"]:.4g}',
        f'{r["best_kid"]:.4g} ({r["best_kid_step"]})', r['protocol']]
       for r in summary['rows']])]
  if summary['seed_groups']:
    parts += ['<h2>Runs that differ only in their seed (mean ± std)</h2>', _html_table(
        ['runs', 'family', 'direction', 'final FID', 'best FID', 'final KID', 'best KID',
         'protocol'],
        [[', '.join(g['runs']), g['family'], g['direction'], g['final_fid'], g['best_fid'],
          g['final_kid'], g['best_kid'], g['protocol']] for g in summary['seed_groups']])]
  if summary.get('nfe_rows'):
    table = _nfe_table(summary['nfe_rows'], lambda cells: cells)
    parts += ['<h2>FID after each step (NFE) at the last evaluation</h2>',
              _html_table(table[0], table[1:])]
  differences = summary['differences']
  if differences['fields']:
    runs = list(differences['runs'])
    parts += ['<h2>Config fields that differ</h2>', _html_table(
        ['field', *runs], [[field, *(_value_text(differences['runs'][run][field])
                                     for run in runs)] for field in differences['fields']])]
  parts.append('<h2>Protocols</h2><ul>' + ''.join(
      f'<li><b>{name}</b>: {html.escape(text)}</li>'
      for name, text in summary['protocols'].items()) + '</ul>')
  if len(summary['protocols']) > 1:
    parts.append(f'<p class="warning">These scores come from {len(summary["protocols"])} '
                 'different protocols: compare scores of one protocol only.</p>')
  parts += ['<h2>FID and KID over training</h2>',
            '<img src="images/curves.png" alt="FID and KID over steps, all runs">']
  parts.append('<h2>Translations of the same test images</h2>')
  for direction, rows in samples.items():
    parts.append(f'<h3>{html.escape(direction)}</h3><table>' + ''.join(
        f'<tr><td>{html.escape(label)}</td>' + ''.join(
            f'<td><img src="images/{name}" alt="{html.escape(label)}"></td>' for name in names)
        + '</tr>' for label, names in rows) + '</table>')
  parts.append('<h2>Software</h2><p>' + html.escape(', '.join(
      f'{k} {v}' for k, v in summary['versions'].items())) + '</p>')
  return ('<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
          f'<title>{html.escape(title)}</title>\n<style>td, th {{ padding: 2px 6px; '
          'font: 13px sans-serif; }} .warning { color: #a00; }</style></head>\n<body>\n'
          + '\n'.join(parts) + '\n</body></html>\n')


def write_report(workdirs: list[str], output: str) -> str:
  """Writes output/index.html, report.md, report.json and images/; returns
  the path of index.html."""
  if not output:
    raise ValueError('--output: expected a folder for the report')
  entries = open_entries(workdirs)
  summary = summarise(entries)
  output = storage.absolute(output)
  storage.check_writable(output, f'--output={output}')
  image_dir = storage.join(output, 'images')
  storage.makedirs(image_dir)
  plot = io.BytesIO()
  overlay_plot(entries).savefig(plot, dpi=100, format='png')
  storage.write_bytes_atomically(storage.join(image_dir, 'curves.png'), plot.getvalue())
  samples = sample_rows(entries, image_dir)
  title = 'Report: ' + ', '.join(e.label for e in entries)
  storage.write_text_atomically(storage.join(output, 'report.md'),
                                f'# {title}\n\n' + markdown(summary))
  storage.write_text_atomically(storage.join(output, 'report.json'),
                                json.dumps(summary, indent=2, default=str))
  path = storage.join(output, 'index.html')
  storage.write_text_atomically(path, page(summary, samples, title))
  return path
