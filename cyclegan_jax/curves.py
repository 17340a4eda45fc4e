"""How FID, KID and the losses moved during training, as data and as a plot.

  eval_history(folder)  {direction: [(step, scores), ...]} from eval/step_*.json
  loss_history(folder)  {tag: [(step, value), ...]} from the TensorBoard events
  write_plot(folder)    eval/curves.png: FID and KID per direction (best and
                        last marked), and the losses

`folder` is a workdir or a sweep's run folder (W/runs/<name>/); `subfolder`
picks the scores of another FID mode (eval/clean/). The losses are the
scalars the training loop logs with a `/` in their name (`gen_ab/gan`,
`disc_a/loss`, ...); after a resume, the steps that the resumed run logged
again replace those of the interrupted one.
"""

import io
import json
import os

from matplotlib.figure import Figure
import numpy as np
import tensorflow as tf

from cyclegan_jax import storage

PLOT_FILE = 'curves.png'


def eval_history(folder: str, subfolder: str = '') -> dict[str, list[tuple[int, dict]]]:
  """{direction: [(step, {'fid', 'kid_mean', ...}), ...]} in step order."""
  history = {}
  for path in storage.glob(storage.join(folder, 'eval', subfolder), 'step_*.json'):
    result = json.loads(storage.read_text(path))
    for direction, scores in result.items():
      if isinstance(scores, dict) and 'fid' in scores:
        history.setdefault(direction, []).append((int(result['step']), scores))
  return history


def _is_loss(tag: str) -> bool:
  return '/' in tag and not tag.startswith(('eval/', 'timing/'))


def loss_history(folder: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} of the logged losses, in step order. Event
  files are read oldest first; a later file (a resumed run) replaces the
  steps from its first step on."""
  merged: dict[str, dict[int, float]] = {}
  files = storage.glob(folder, 'events.out.tfevents.*')
  def started(path):  # events.out.tfevents.<seconds>.<host>...: the writer's start.
    seconds = os.path.basename(path).split('.')[3]
    return (int(seconds) if seconds.isdigit() else 0, path)

  for path in sorted(files, key=started):
    this_file: dict[str, dict[int, float]] = {}
    # TensorFlow reads local files here (its own GCS client honours no
    # emulator): a remote event file is read from a local copy.
    with storage.local_file(path) as local:
      try:
        for event in tf.compat.v1.train.summary_iterator(local):
          for value in event.summary.value:
            if _is_loss(value.tag):
              number = (float(tf.make_ndarray(value.tensor)) if value.HasField('tensor')
                        else float(value.simple_value))
              this_file.setdefault(value.tag, {})[int(event.step)] = number
      except tf.errors.DataLossError:
        pass  # A file cut short by a kill: what was read before the cut counts.
    for tag, values in this_file.items():
      first = min(values)
      kept = {s: v for s, v in merged.get(tag, {}).items() if s < first}
      merged[tag] = {**kept, **values}
  return {tag: sorted(values.items()) for tag, values in sorted(merged.items())}


def _mark(axis, steps, values, color):
  """The best (lowest) and the last value, marked and labelled."""
  best = int(np.argmin(values))
  axis.plot(steps[best], values[best], marker='*', markersize=12, color=color, linestyle='')
  axis.annotate(f'best {values[best]:.4g} @ {steps[best]}', (steps[best], values[best]),
                textcoords='offset points', xytext=(4, -12), fontsize=7, color=color)
  axis.plot(steps[-1], values[-1], marker='o', markersize=6, color=color, linestyle='',
            fillstyle='none')
  axis.annotate(f'last {values[-1]:.4g}', (steps[-1], values[-1]),
                textcoords='offset points', xytext=(4, 4), fontsize=7, color=color)


def plot(history: dict, losses: dict, title: str = '', fid_mode: str = '') -> Figure:
  """FID, KID (eval_history) and losses (loss_history) over steps, one panel each."""
  figure = Figure(figsize=(8, 9), layout='constrained')
  fid_axis, kid_axis, loss_axis = figure.subplots(3, 1, sharex=True)
  for k, (direction, entries) in enumerate(sorted(history.items())):
    color = f'C{k}'
    steps = [step for step, _ in entries]
    for axis, key in ((fid_axis, 'fid'), (kid_axis, 'kid_mean')):
      values = [scores[key] for _, scores in entries]
      axis.plot(steps, values, marker='.', color=color, label=direction)
      _mark(axis, steps, values, color)
  suffix = f' ({fid_mode})' if fid_mode else ''
  for axis, label in ((fid_axis, 'FID' + suffix), (kid_axis, 'KID' + suffix)):
    axis.margins(x=0.1, y=0.2)  # Room for the labels of the marked points.
    axis.set_ylabel(label)
    axis.grid(alpha=0.3)
    if history:
      axis.legend(fontsize=8)
    else:
      axis.text(0.5, 0.5, 'no evaluation yet', ha='center', va='center',
                transform=axis.transAxes)
  for k, (tag, values) in enumerate(losses.items()):
    loss_axis.plot(*zip(*values), linewidth=1, color=f'C{k % 10}', label=tag)
  loss_axis.set_ylabel('loss')
  loss_axis.set_xlabel('step')
  loss_axis.grid(alpha=0.3)
  if losses:
    loss_axis.legend(fontsize=7, ncol=3)
  if title:
    figure.suptitle(title)
  return figure


def write_plot(folder: str, subfolder: str = '', title: str = '') -> str:
  """Draws eval/[subfolder/]curves.png of a workdir or run folder; returns its path."""
  history = eval_history(folder, subfolder)
  path = storage.join(folder, 'eval', subfolder, PLOT_FILE)
  latest = storage.join(os.path.dirname(path), 'latest.json')
  fid_mode = ''
  if storage.isfile(latest):
    fid_mode = json.loads(storage.read_text(latest)).get('protocol', {}).get('fid_mode', '')
  storage.makedirs(os.path.dirname(path))
  figure = plot(history, loss_history(folder), title, fid_mode)
  png = io.BytesIO()
  figure.savefig(png, dpi=100, format='png')
  storage.write_bytes_atomically(path, png.getvalue())  # A kill mid-write leaves the old plot.
  return path
