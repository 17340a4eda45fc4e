"""How FID, KID and the losses moved during training, as data and as a plot.

  eval_history(folder)  {direction: [(step, scores), ...]} from eval/step_*.json
  loss_history(folder)  {tag: [(step, value), ...]} from the TensorBoard events
  write_plot(folder)    eval/curves.png: FID and KID per direction (best and
                        last marked), and the losses (smoothed, the logged
                        values faint behind)

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
from matplotlib.ticker import MaxNLocator
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


def smooth(values, weight: float) -> np.ndarray:
  """Exponential moving average, debiased as TensorBoard's: the first points
  are not pulled towards 0, and weight 0 returns the values as they are."""
  smoothed, last, debias = [], 0.0, 0.0
  for value in values:
    last = weight * last + (1 - weight) * value
    debias = weight * debias + (1 - weight)
    smoothed.append(last / debias)
  return np.asarray(smoothed, dtype=float)


def _smoothing_weight(count: int) -> float:
  """Averages over about a 20th of the series, at most 50 points: a series of
  under 40 points is drawn as logged (an average would only make it lag)."""
  return 1 - 1 / min(max(count // 20, 1), 50)


def _markevery(count: int, most: int = 25) -> list[int]:
  """Indices of at most `most` evenly spread points, the first and last included."""
  return sorted({int(i) for i in np.linspace(0, count - 1, min(count, most)).round()})


def _mark(axis, steps, values, color) -> list[tuple]:
  """Marks the best (lowest) value with a star and the last with a ring; returns
  their (handle, label) legend entries, always two so that legend columns align."""
  best = int(np.argmin(values))
  star, = axis.plot(steps[best], values[best], marker='*', markersize=12, color=color,
                    linestyle='')
  ring, = axis.plot(steps[-1], values[-1], marker='o', markersize=10, color=color,
                    linestyle='', fillstyle='none')
  if best == len(values) - 1:
    blank, = axis.plot([], [], linestyle='')
    return [((star, ring), f'best = last {values[best]:.4g} @ {steps[best]}'), (blank, '')]
  return [(star, f'best {values[best]:.4g} @ {steps[best]}'),
          (ring, f'last {values[-1]:.4g} @ {steps[-1]}')]


def plot(history: dict, losses: dict, title: str = '', fid_mode: str = '') -> Figure:
  """FID, KID (eval_history) and losses (loss_history) over steps, one panel each.
  The values of the best and last points are in the legend, a column per
  direction, so that they never overlap each other or leave the figure."""
  figure = Figure(figsize=(8, 9), layout='constrained')
  fid_axis, kid_axis, loss_axis = figure.subplots(3, 1, sharex=True)
  suffix = f' ({fid_mode})' if fid_mode else ''
  for axis, key, label in ((fid_axis, 'fid', 'FID' + suffix),
                           (kid_axis, 'kid_mean', 'KID' + suffix)):
    entries = []
    for k, (direction, points) in enumerate(sorted(history.items())):
      steps = [step for step, _ in points]
      values = [scores[key] for _, scores in points]
      line, = axis.plot(steps, values, marker='o', markersize=3, color=f'C{k % 10}')
      entries += [(line, direction), *_mark(axis, steps, values, f'C{k % 10}')]
    axis.margins(x=0.05, y=0.2)
    axis.set_ylabel(label)
    axis.grid(alpha=0.3)
    if entries:
      axis.legend(*zip(*entries), ncols=len(history), fontsize=7)
    else:
      axis.text(0.5, 0.5, 'no evaluation yet', ha='center', va='center',
                transform=axis.transAxes)
  smoothed = False
  for k, (tag, points) in enumerate(losses.items()):
    steps, values = zip(*points)
    weight = _smoothing_weight(len(values))
    smoothed |= weight > 0
    # The values as logged, faint, behind their trend, which alone is in the legend.
    loss_axis.plot(steps, values, linewidth=0.8, alpha=0.25, color=f'C{k % 10}')
    loss_axis.plot(steps, smooth(values, weight), linewidth=1.2, marker='o', markersize=3,
                   markevery=_markevery(len(values)), color=f'C{k % 10}', label=tag)
  loss_axis.set_ylabel('loss')
  loss_axis.set_xlabel('step')
  # Steps are whole numbers: no ticks at 19.5 when there is one point.
  loss_axis.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
  loss_axis.grid(alpha=0.3)
  for axis in figure.axes:  # Plain tick labels: no '1e6' or '+1.2345e1' aside to add.
    axis.ticklabel_format(style='plain', useOffset=False)
  if losses:
    loss_axis.legend(fontsize=7, ncols=3, title_fontsize=7,
                     title='smoothed (faint: as logged)' if smoothed else None)
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
