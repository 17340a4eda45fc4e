"""One report across workdirs: their FID/KID side by side, with what they mean.

  python main.py --mode=report --workdirs=runs/h2z,runs/h2z_cut --output=report

writes `report/index.html` (opens from disk) and `report/report.md`: per
workdir (a sweep: per run) and direction, the final and the best FID and KID
with their steps; the protocol each score was computed under (FID mode, test
data, Inception weights); the family and the config fields in which the
workdirs differ (only fields that the compared runs' families read); per
group of runs that differ only in their seed, mean ± std; the FID and KID
curves of all of them overlaid; a row of translations of the same test images
from each; the software each workdir was trained with (its versions.json,
which training writes: record_versions) and the software that wrote the
report.

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
import subprocess

from matplotlib.figure import Figure
import ml_collections
import numpy as np

from cyclegan_jax import configuration
from cyclegan_jax import curves
from cyclegan_jax import evaluate
from cyclegan_jax import families
from cyclegan_jax import image_io
from cyclegan_jax import inference
from cyclegan_jax import results_page
from cyclegan_jax import storage
from cyclegan_jax import sweeps
from cyclegan_jax.data import input_pipeline

NUM_SAMPLES = 4  # Test images per direction in the row of translations.
# The software a workdir records at each start of training (versions.json)
# and the report names: these packages, Python and the git commit.
PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'cyclegan_jax')
VERSIONS_FILE = 'versions.json'
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


def family_fields() -> dict[str, set]:
  """{kind: the config fields its add_config_fields adds}: the fields of one
  family's own block, which no other family reads unless it says so."""
  blocks = [k for k, v in configuration.defaults().items()
            if isinstance(v, ml_collections.ConfigDict)]
  owned = {}
  for kind, family in families.FAMILIES.items():
    probe = ml_collections.ConfigDict({block: {} for block in blocks})
    family.add_config_fields(probe)
    owned[kind] = set(_flat(probe.to_dict()))
  return owned


def fields_read(kind: str, owned: dict) -> set | None:
  """The family-owned fields (of `owned`, family_fields()) that family `kind`
  reads: its own and those of other families it names in ALSO_READS; None
  for a kind not registered here (then every field may matter)."""
  family = families.FAMILIES.get(kind)
  if family is None:
    return None
  return owned[kind] | set(getattr(family, 'ALSO_READS', ()))


def config_differences(entries: list[Entry]) -> list[dict]:
  """Per entry, {field: value} of the config fields whose values differ
  between the entries (not sweep definitions or file locations), among the
  fields that any of their families reads: general fields (data, schedule,
  seed, ...) and family fields of those families only. A field that an
  entry's own family does not read is left out of its dict (the tables show
  "—")."""
  owned = family_fields()
  any_family = set().union(*owned.values())
  reads = [fields_read(e.config.model.kind, owned) for e in entries]
  read = lambda k, r: k not in any_family or r is None or k in r
  flats = [{k: v for k, v in _flat(e.config.to_dict()).items()
            if not k.startswith('sweep.') and k not in LOCATION_FIELDS} for e in entries]
  fields = sorted({k for flat in flats for k in flat if any(read(k, r) for r in reads)})
  differing = [k for k in fields if len({repr(flat.get(k)) for flat in flats}) > 1]
  return [{k: flat.get(k) for k in differing if read(k, r)} for flat, r in zip(flats, reads)]


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
          'differences': {'fields': sorted({k for d in differences for k in d}),
                          'runs': {e.label: d for e, d in zip(entries, differences)}},
          'protocols': {f'P{i + 1}': _protocol_text(p) for i, p in enumerate(protocols)},
          'trained_with': {os.path.basename(e.workdir): recorded_versions(e.workdir)
                           for e in entries},
          'versions': versions()}


def versions() -> dict:
  """The software of this process: Python, PACKAGES (None: not installed)
  and the git commit of the source tree the package runs from."""
  found = {'python': platform.python_version()}
  for package in PACKAGES:
    try:
      found[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      found[package] = None
  found['git_commit'] = git_commit()
  return found


def git_commit() -> str | None:
  """HEAD of the git checkout this package is imported from ('-dirty' when
  tracked files differ from it); None when it is installed elsewhere, git is
  missing or refuses: never an error, training must not fail for it."""
  source = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  git = lambda *args: subprocess.run(['git', '-C', source, *args], capture_output=True,
                                     text=True, timeout=10, check=True).stdout.strip()
  try:
    top = git('rev-parse', '--show-toplevel')
    # A package installed into site-packages inside some other checkout (a
    # virtual environment in a repository) is not that checkout's code.
    if not os.path.samefile(top, source):
      return None
    commit = git('rev-parse', 'HEAD')
    return commit + ('-dirty' if git('status', '--porcelain', '--untracked-files=no') else '')
  except (OSError, subprocess.SubprocessError):
    return None


def record_versions(workdir: str, step: int) -> None:
  """Adds versions() to workdir/versions.json, a list of {'from_step': the
  step training (re)started at, **versions}: a new entry only when the
  software differs from the last one, so that a run resumed with other
  software says from which step it ran with it. Called by training, on
  process 0, at each start."""
  path = storage.join(workdir, VERSIONS_FILE)
  records = recorded_versions(workdir) or []
  now = versions()
  if records and {k: v for k, v in records[-1].items() if k != 'from_step'} == now:
    return
  storage.write_text_atomically(path, json.dumps(records + [{'from_step': step, **now}],
                                                 indent=2))


def recorded_versions(workdir: str) -> list[dict] | None:
  """workdir/versions.json (record_versions); None when there is none
  (trained by an older version) or it cannot be read."""
  path = storage.join(workdir, VERSIONS_FILE)
  if not storage.isfile(path):
    return None
  try:
    records = json.loads(storage.read_text(path))
  except (OSError, ValueError):
    return None
  ok = isinstance(records, list) and records and all(isinstance(r, dict) for r in records)
  return records if ok else None


def _value_text(value) -> str:
  """A value as a cell shows it: None as "—", an empty string as ''."""
  return '—' if value is None else "''" if value == '' else str(value)


# The report's tables, as (header, rows of cell texts): markdown() and page()
# write the same tables.

def _scores_table(rows: list[dict]) -> tuple[list, list]:
  header = ['run', 'family', 'direction', 'final FID (step)', 'best FID (step)', 'final KID',
            'best KID (step)', 'protocol']
  return header, [[r['run'], r['family'], r['direction'],
                   f'{r["final_fid"]:.4g} ({r["final_step"]})',
                   f'{r["best_fid"]:.4g} ({r["best_fid_step"]})', f'{r["final_kid"]:.4g}',
                   f'{r["best_kid"]:.4g} ({r["best_kid_step"]})', r['protocol']] for r in rows]


def _seed_table(groups: list[dict]) -> tuple[list, list]:
  header = ['runs', 'family', 'direction', 'final FID', 'best FID', 'final KID', 'best KID',
            'protocol']
  return header, [[', '.join(g['runs']), g['family'], g['direction'], g['final_fid'],
                   g['best_fid'], g['final_kid'], g['best_kid'], g['protocol']] for g in groups]


def _nfe_table(rows: list[dict]) -> tuple[list, list]:
  most = max(len(r['fid_by_nfe']) for r in rows)
  header = ['run', 'direction', 'step', *(f'NFE {n}' for n in range(1, most + 1)), 'best NFE']
  cells = []
  for r in rows:
    fids = [f'{r["fid_by_nfe"][str(n)]:.4g}' if str(n) in r['fid_by_nfe'] else '—'
            for n in range(1, most + 1)]
    cells.append([r['run'], r['direction'], str(r['step']), *fids, str(r['best_nfe'])])
  return header, cells


NOT_READ = "—: not read by that run's family"


def _differences_table(differences: dict) -> tuple[list, list]:
  """A row per field, a column per run; "—" where the run's family does not
  read the field."""
  runs = differences['runs']
  return ['field', *runs], [[field, *(_value_text(runs[run].get(field)) for run in runs)]
                            for field in differences['fields']]


SOFTWARE_HEADER = ('python', *PACKAGES, 'git commit')


def _software_table(trained_with: dict) -> tuple[list, list]:
  """A row per workdir (per start that changed the software, with its step,
  when any did); 'not recorded' for a workdir trained before versions.json."""
  restarted = any(len(records or ()) > 1 for records in trained_with.values())
  header = ['workdir', *(['from step'] if restarted else []), *SOFTWARE_HEADER]
  rows = []
  for workdir, records in trained_with.items():
    if not records:
      rows.append([workdir, 'not recorded'])
    for record in records or ():
      commit = record.get('git_commit')
      rows.append([workdir, *([_value_text(record.get('from_step'))] if restarted else []),
                   *(_value_text(record.get(k)) for k in ('python', *PACKAGES)),
                   _value_text(commit and _short_commit(commit))])
  return header, rows


def _short_commit(commit: str) -> str:
  head, dash, rest = commit.partition('-')  # 'abc...-dirty': 12 digits, then -dirty.
  return head[:12] + dash + rest


def _is_number(text: str) -> bool:
  """Whether a cell reads as a number ('40', '0.04 (20)', '42 ± 2.8'): those
  are right-aligned."""
  try:
    float(str(text).split(' ')[0])
    return True
  except ValueError:
    return False


def _all_numbers(cells) -> bool:
  """Every cell that holds a value (not "—") is a number, and some do."""
  values = [c for c in cells if c not in ('—', '')]
  return bool(values) and all(_is_number(v) for v in values)


def _numeric_columns(header: list, rows: list) -> list[bool]:
  """Per column, _all_numbers (a short row's last cell spans the rest: in none)."""
  cells = lambda i: [row[i] for row in rows
                     if i < len(row) - 1 or (i < len(row) == len(header))]
  return [_all_numbers(cells(i)) for i in range(len(header))]


def _markdown_table(header: list, rows: list) -> list[str]:
  """Lines of a Markdown table; numeric columns right-aligned, short rows
  padded."""
  line = lambda cells: '| ' + ' | '.join(str(c) for c in cells) + ' |'
  rule = '|' + ''.join('---:|' if n else '---|' for n in _numeric_columns(header, rows))
  return [line(header), rule] + [line([*row, *[''] * (len(header) - len(row))])
                                 for row in rows]


def markdown(summary: dict) -> str:
  """The tables of the report as Markdown."""
  lines = _markdown_table(*_scores_table(summary['rows']))
  if summary['seed_groups']:
    lines += ['', 'Runs that differ only in their seed (mean ± std):', '']
    lines += _markdown_table(*_seed_table(summary['seed_groups']))
  if summary.get('nfe_rows'):
    lines += ['', 'FID after each step (NFE) at the last evaluation:', '']
    lines += _markdown_table(*_nfe_table(summary['nfe_rows']))
  if summary['differences']['fields']:
    lines += ['', f'Config fields that differ ({NOT_READ}):', '']
    lines += _markdown_table(*_differences_table(summary['differences']))
  lines += ['', 'Protocols:', '']
  lines += [f'- {name}: {text}' for name, text in summary['protocols'].items()]
  if len(summary['protocols']) > 1:
    lines += ['', f'These scores come from {len(summary["protocols"])} different protocols: '
                  'compare scores of one protocol only.']
  lines += ['', 'Trained with:', '']
  lines += _markdown_table(*_software_table(summary['trained_with']))
  lines += ['', 'Report written with: ' + _versions_text(summary['versions'])]
  return '\n'.join(lines) + '\n'


def _versions_text(found: dict) -> str:
  commit = found.get('git_commit')
  return ', '.join([*(f'{k} {_value_text(v)}' for k, v in found.items() if k != 'git_commit'),
                    f'git commit {_value_text(commit and _short_commit(commit))}'])


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


def _save(image: np.ndarray, path: str) -> tuple[int, ...]:
  """Writes the image for viewing; returns the shape written."""
  image = image_io.for_viewing(image)
  image_io.write_png_atomically(path, image)
  return image.shape


def sample_rows(entries: list[Entry], image_dir: str) -> dict:
  """{direction: [(label, [(image file name, its shape)])]}: the first
  NUM_SAMPLES test inputs (a row per distinct set of inputs) and each
  entry's translations of them, at its latest checkpoint."""
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
          name = f'{direction}_input{len(known)}_{i}.png'
          names.append((name, _save(input_pipeline.to_uint8(image),
                                    storage.join(image_dir, name))))
        label = 'test input' if len(known) == 1 else f'test input ({entry.label})'
        direction_rows.append((label, names))
      names = []
      for i, image in enumerate(fake):
        name = f'{direction}_run{k}_{i}.png'
        names.append((name, _save(image, storage.join(image_dir, name))))
      direction_rows.append((f'{entry.label} (step {restored.step})', names))
  return rows


def _html_table(header: list, rows: list) -> str:
  """A ruled table: numbers right-aligned (a column's header too when all
  its values are); a short row's last cell spans the rest."""
  numeric = _numeric_columns(header, rows)
  cls = lambda yes: ' class="num"' if yes else ''
  head = ''.join(f'<th{cls(n)}>{html.escape(str(h))}</th>' for h, n in zip(header, numeric))
  lines = []
  for row in rows:
    # A "—" lines up with the numbers of its column, or of its row (the
    # config differences: a row per field).
    numeric_row = _all_numbers(row[1:])
    cells = [f'<td{cls(_is_number(c) or (c == "—" and (n or numeric_row)))}>'
             f'{html.escape(str(c))}</td>' for c, n in zip(row, numeric)]
    if len(row) < len(header):
      cells[-1] = cells[-1].replace('<td', f'<td colspan="{len(header) - len(row) + 1}"', 1)
    lines.append('<tr>' + ''.join(cells) + '</tr>')
  return f'<table>\n<tr>{head}</tr>\n' + '\n'.join(lines) + '\n</table>'


def _samples_table(rows: list) -> str:
  """A row of images per label, each at least MIN_IMAGE_WIDTH wide."""
  return '<table>\n' + '\n'.join(
      f'<tr><td>{html.escape(label)}</td>' + ''.join(
          f'<td class="image">{results_page.image_tag(f"images/{name}", label, shape)}</td>'
          for name, shape in names) + '</tr>' for label, names in rows) + '\n</table>'


def page(summary: dict, samples: dict, title: str) -> str:
  """The HTML page (images under images/), with results_page's stylesheet."""
  parts = ['<h2>Scores</h2>', _html_table(*_scores_table(summary['rows']))]
  if summary['seed_groups']:
    parts += ['<h2>Runs that differ only in their seed (mean ± std)</h2>',
              _html_table(*_seed_table(summary['seed_groups']))]
  if summary.get('nfe_rows'):
    parts += ['<h2>FID after each step (NFE) at the last evaluation</h2>',
              _html_table(*_nfe_table(summary['nfe_rows']))]
  if summary['differences']['fields']:
    parts += ['<h2>Config fields that differ</h2>', f'<p>{html.escape(NOT_READ)}</p>',
              _html_table(*_differences_table(summary['differences']))]
  parts.append('<h2>Protocols</h2><ul>' + ''.join(
      f'<li><b>{name}</b>: {html.escape(text)}</li>'
      for name, text in summary['protocols'].items()) + '</ul>')
  if len(summary['protocols']) > 1:
    parts.append(f'<p class="warning">These scores come from {len(summary["protocols"])} '
                 'different protocols: compare scores of one protocol only.</p>')
  parts += ['<h2>FID and KID over training</h2>',
            '<img src="images/curves.png" alt="FID and KID over steps, all runs" class="plot">']
  parts.append('<h2>Translations of the same test images</h2>')
  for direction, rows in samples.items():
    parts += [f'<h3>{html.escape(direction)}</h3>', _samples_table(rows)]
  parts += ['<h2>Trained with</h2>', _html_table(*_software_table(summary['trained_with'])),
            f'<p>Report written with: {html.escape(_versions_text(summary["versions"]))}</p>']
  return results_page.document(title, parts)


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
