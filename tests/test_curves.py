"""curves: FID/KID from eval/*.json and losses from TensorBoard events, over
steps; the plot with its best and last points marked."""

import glob
import json
import os

from clu import metric_writers
import numpy as np
from PIL import Image

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
  texts = sorted(t.get_text() for t in fid_axis.texts)
  assert texts == ['best 40 @ 20', 'best 60 @ 30', 'last 45', 'last 60']
  assert sorted(t.get_text() for t in kid_axis.texts) == [
      'best 0.04 @ 20', 'best 0.06 @ 30', 'last 0.045', 'last 0.06']
  assert sorted(line.get_label() for line in loss_axis.get_lines()) == ['disc_a/loss',
                                                                        'gen_ab/gan']

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
