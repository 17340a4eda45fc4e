"""curves: FID/KID from eval/*.json and losses from TensorBoard events, over
steps; the plot with its best and last points marked."""

import glob
import json
import os

from clu import metric_writers
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
import numpy as np
from PIL import Image
import pytest

from cyclegan_jax import curves


def _write_eval(folder, step, fid_ab, fid_ba, mode='legacy', subfolder=''):
  path = os.path.join(folder, 'eval', subfolder, f'step_{step:08d}.json')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  result = {'step': step, 'protocol': {'fid_mode': mode},
            'AtoB': {'fid': fid_ab, 'kid_mean': fid_ab / 1000, 'kid_std': 0.0},
            'BtoA': {'fid': fid_ba, 'kid_mean': fid_ba / 1000, 'kid_std': 0.0}}
  for name in (os.path.basename(path), 'latest.json'):
    with open(os.path.join(os.path.dirname(path), name), 'w') as f:
      json.dump(result, f)


def _write_losses(folder, steps, value, started):
  """Scalars as the training loop logs them, from one writer whose event file
  says it started at `started` (seconds)."""
  before = set(glob.glob(os.path.join(folder, 'events.out.tfevents.*')))
  writer = metric_writers.create_default_writer(folder)
  for step in steps:
    writer.write_scalars(step, {'gen_ab/gan': value(step), 'disc_a/loss': 2 * value(step),
                                'learning_rate': 2e-4, 'steps_per_sec': 3.0,
                                'eval/AtoB/fid': 99.0})
  writer.close()
  new, = set(glob.glob(os.path.join(folder, 'events.out.tfevents.*'))) - before
  parts = os.path.basename(new).split('.')
  parts[3] = str(started)
  os.rename(new, os.path.join(folder, '.'.join(parts)))


def test_histories_in_step_order_and_a_resume_replaces_the_steps_it_logged_again(tmp_path):
  folder = str(tmp_path)
  for step, fid_ab, fid_ba in ((20, 40.0, 80.0), (10, 50.0, 70.0), (30, 45.0, 60.0)):
    _write_eval(folder, step, fid_ab, fid_ba)
  _write_eval(folder, 30, 1.0, 1.0, mode='clean', subfolder='clean')  # Another mode's.
  history = curves.eval_history(folder)
  assert sorted(history) == ['AtoB', 'BtoA']
  assert [(s, v['fid']) for s, v in history['AtoB']] == [(10, 50.0), (20, 40.0), (30, 45.0)]
  assert [(s, v['fid']) for s, v in curves.eval_history(folder, 'clean')['BtoA']] == [(30, 1.0)]

  # Interrupted after logging step 10 (checkpoint at 5), resumed from step 5.
  _write_losses(folder, range(1, 11), lambda s: 1.0, started=1000)
  _write_losses(folder, range(6, 13), lambda s: 0.5, started=2000)
  losses = curves.loss_history(folder)
  assert list(losses) == ['disc_a/loss', 'gen_ab/gan']  # Losses only, not eval/ or rates.
  assert losses['gen_ab/gan'] == [(s, 1.0) for s in range(1, 6)] + [(s, 0.5)
                                                                     for s in range(6, 13)]
  assert losses['disc_a/loss'][-1] == (12, 1.0)


def test_a_file_cut_short_keeps_what_was_written_before_the_cut(tmp_path):
  folder = str(tmp_path)
  _write_losses(folder, range(1, 41), float, started=1000)
  path, = glob.glob(os.path.join(folder, 'events.out.tfevents.*'))
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[:len(data) // 2 + 3])  # Mid-record, as a kill leaves it.
  steps = [s for s, _ in curves.loss_history(folder)['gen_ab/gan']]
  assert 5 < len(steps) < 40 and steps == list(range(1, len(steps) + 1))


def test_plot_marks_best_and_last_and_names_the_mode(tmp_path):
  folder = str(tmp_path)
  for step, fid_ab, fid_ba in ((10, 50.0, 70.0), (20, 40.0, 80.0), (30, 45.0, 60.0)):
    _write_eval(folder, step, fid_ab, fid_ba, mode='clean')
  _write_losses(folder, range(1, 31), lambda s: 1.0 / s, started=1000)
  figure = curves.plot(curves.eval_history(folder), curves.loss_history(folder), 'run',
                       'clean')
  fid_axis, kid_axis, loss_axis = figure.axes
  assert fid_axis.get_ylabel() == 'FID (clean)' and kid_axis.get_ylabel() == 'KID (clean)'
  # A legend column per direction: its line, its best and last values.
  assert _legend_texts(fid_axis) == ['AtoB', 'best 40 @ 20', 'last 45 @ 30',
                                     'BtoA', 'best = last 60 @ 30', '']
  assert _legend_texts(kid_axis) == ['AtoB', 'best 0.04 @ 20', 'last 0.045 @ 30',
                                     'BtoA', 'best = last 0.06 @ 30', '']
  assert _legend_texts(loss_axis) == ['disc_a/loss', 'gen_ab/gan']

  path = curves.write_plot(folder, title='run')
  assert path == os.path.join(folder, 'eval', 'curves.png')
  image = np.asarray(Image.open(path).convert('L'))
  assert image.shape == (900, 800) and image.std() > 10  # Drawn, not blank.
  assert not glob.glob(os.path.join(folder, 'eval', '*.tmp.png'))


def test_plot_of_a_folder_without_evaluation_says_so(tmp_path):
  folder = str(tmp_path)
  _write_losses(folder, range(1, 5), float, started=1000)
  figure = curves.plot(curves.eval_history(folder), curves.loss_history(folder))
  assert [t.get_text() for t in figure.axes[0].texts] == ['no evaluation yet']
  assert os.path.isfile(curves.write_plot(folder))


def _legend_texts(axis):
  return [text.get_text() for text in axis.get_legend().get_texts()]


def _figure(tmp_path, evals, loss_steps=range(1, 31)):
  """The plot of evaluations [(step, fid_ab, fid_ba)] and losses at loss_steps, drawn."""
  folder = str(tmp_path)
  for step, fid_ab, fid_ba in evals:
    _write_eval(folder, step, fid_ab, fid_ba)
  _write_losses(folder, loss_steps, lambda s: 1.0 + 0.1 * np.sin(s), started=1000)
  figure = curves.plot(curves.eval_history(folder), curves.loss_history(folder), 'run')
  FigureCanvasAgg(figure).draw()
  return figure


def test_smooth_keeps_a_constant_and_one_point_and_smooths_a_step_monotonically():
  assert np.allclose(curves.smooth([3.0] * 7, 0.9), 3.0)  # Debiased: no pull towards 0.
  assert curves.smooth([5.0], 0.9).tolist() == [5.0]
  assert curves.smooth([], 0.9).tolist() == []
  assert curves.smooth([1.0, 4.0, 2.0], 0.0).tolist() == [1.0, 4.0, 2.0]
  step = curves.smooth([0.0] * 10 + [1.0] * 40, 0.8)
  assert len(step) == 50 and np.allclose(step[:10], 0.0)
  assert np.all(np.diff(step) >= 0) and 0 < step[10] < 0.5 and step[-1] > 0.99
  noisy = 1 + np.random.default_rng(0).normal(size=500)
  assert np.std(curves.smooth(noisy, 0.9)[50:]) < np.std(noisy) / 2


def test_only_long_series_are_smoothed_and_markers_are_spread_over_the_whole_series():
  assert [curves._smoothing_weight(n) for n in (1, 2, 39)] == [0.0] * 3
  assert 0 < curves._smoothing_weight(200) < curves._smoothing_weight(10**6) == 0.98
  assert curves._markevery(1) == [0] and curves._markevery(2) == [0, 1]
  spread = curves._markevery(3000)
  assert spread[0] == 0 and spread[-1] == 2999 and len(spread) == 25


def _coloured_pixels(figure, axis, color):
  """How many pixels of `color` the axis shows outside its legend."""
  image = np.asarray(figure.canvas.buffer_rgba())[..., :3].astype(float) / 255
  rows, columns = np.mgrid[:image.shape[0], :image.shape[1]]
  y = image.shape[0] - rows  # Display coordinates count from the bottom.
  def inside(box):
    return (box.x0 < columns) & (columns < box.x1) & (box.y0 < y) & (y < box.y1)
  near = np.abs(image - to_rgb(color)).max(axis=-1) < 0.1
  return int((near & inside(axis.get_window_extent())
              & ~inside(axis.get_legend().get_window_extent())).sum())


@pytest.mark.parametrize('count', [1, 2, 30])
def test_every_series_shows_its_points_even_a_single_one(tmp_path, count):
  evals = [(10 * (i + 1), 50.0 + i, 60.0 - i) for i in range(count)]
  figure = _figure(tmp_path, evals, loss_steps=range(20, 20 + count))
  for axis in figure.axes:
    for line in axis.get_lines():
      if len(line.get_xdata()) and line.get_alpha() is None:  # Not a faint raw series.
        assert line.get_marker() not in ('None', '', ' ', None), (axis.get_ylabel(), line)
    for k in range(2):  # Both series of each panel, drawn outside the legend.
      assert _coloured_pixels(figure, axis, f'C{k}') > 10, (axis.get_ylabel(), k)


@pytest.mark.parametrize('evals', [
    [(20, 150.0, 160.0)],  # One evaluation: best = last.
    [(10, 150.0, 160.0), (20, 140.0, 170.0)],  # Best at the last step, and at the first.
    [(10, 50.0, 50.1), (20, 40.0, 40.1), (30, 45.0, 45.05)],  # Directions close together.
    [(10 * i, 100.0 + (i % 7), 100.5 + (i % 5)) for i in range(1, 31)],  # Many; ties.
    [(1000000, 12.3456, 12.3457), (2000000, 12.3455, 12.3458)],  # Long labels, far right.
])
def test_labels_name_best_and_last_once_and_stay_inside_the_figure_apart(tmp_path, evals):
  figure = _figure(tmp_path, evals)
  history = curves.eval_history(str(tmp_path))
  for axis, key in zip(figure.axes[:2], ('fid', 'kid_mean')):
    texts = _legend_texts(axis)
    for direction, points in history.items():
      values = [v[key] for _, v in points]
      best = int(np.argmin(values))
      labels = [t for t in texts if t.startswith(('best', 'last'))]
      if best == len(values) - 1:
        assert f'best = last {values[best]:.4g} @ {points[best][0]}' in labels
      else:
        assert f'best {values[best]:.4g} @ {points[best][0]}' in labels
        assert f'last {values[-1]:.4g} @ {points[-1][0]}' in labels
    legend = axis.get_legend()
    assert axis.get_window_extent().contains(*legend.get_window_extent().min)
    assert axis.get_window_extent().contains(*legend.get_window_extent().max)
    boxes = [t.get_window_extent() for t in legend.get_texts() if t.get_text()]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
  for axis in figure.axes:  # All that an axis draws: legend, ticks, their labels...
    box = axis.get_tightbbox()
    assert figure.bbox.contains(*box.min) and figure.bbox.contains(*box.max), box


def test_a_resumed_run_is_one_smoothed_series_with_its_logged_values_faint_behind(tmp_path):
  folder = str(tmp_path)
  _write_eval(folder, 60, 80.0, 90.0)
  _write_eval(folder, 120, 70.0, 85.0)
  _write_losses(folder, range(1, 101), lambda s: 2.0 + np.sin(s), started=1000)
  _write_losses(folder, range(51, 121), lambda s: 1.0 + np.sin(s), started=2000)  # Resumed.
  losses = curves.loss_history(folder)
  figure = curves.plot(curves.eval_history(folder), losses)
  loss_axis = figure.axes[2]
  assert _legend_texts(loss_axis) == ['disc_a/loss', 'gen_ab/gan']  # Smoothed lines only.
  assert loss_axis.get_legend().get_title().get_text() == 'smoothed (faint: as logged)'
  for tag, points in losses.items():
    steps, values = map(list, zip(*points))
    assert steps == list(range(1, 121))
    faint, = [line for line in loss_axis.get_lines() if line.get_alpha() is not None
              and np.array_equal(line.get_ydata(), values)]
    line, = [line for line in loss_axis.get_lines() if line.get_label() == tag]
    assert faint.get_color() == line.get_color() and faint.get_alpha() < 0.5
    assert list(line.get_xdata()) == steps
    assert np.allclose(line.get_ydata(), curves.smooth(values, curves._smoothing_weight(120)))
  path = curves.write_plot(folder)
  assert np.asarray(Image.open(path).convert('L')).shape == (900, 800)
