"""Workdirs on object storage: storage.py's operations on local and gs://
paths alike, the trainer's lock on GCS, and training, resuming and scoring a
gs:// workdir end to end, against a local GCS emulator (tests/gcs.py)."""

import importlib.util
import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import tiny
from cyclegan_jax import checkpoints
from cyclegan_jax import curves
from cyclegan_jax import evaluate
from cyclegan_jax import inception
from cyclegan_jax import inception_weights
from cyclegan_jax import storage
from cyclegan_jax import train
from cyclegan_jax import workdir_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The `gcs` extra (google-cloud-storage, gcsfs); without it these tests skip.
exceptions = pytest.importorskip('google.api_core.exceptions', reason='the gcs extra')
pytest.importorskip('gcsfs', reason='the gcs extra')


@pytest.fixture(params=['local', 'gs'])
def root(request, tmp_path):
  """A folder to work in: local, or a new bucket on the emulator."""
  if request.param == 'local':
    return str(tmp_path)
  return request.getfixturevalue('bucket')


def test_files_are_written_read_listed_copied_and_moved_alike(root, tmp_path):
  folder = storage.join(root, 'w')
  storage.makedirs(storage.join(folder, 'sub'))
  storage.write_text_atomically(storage.join(folder, 'a.json'), '{"x": 1}')
  storage.write_bytes_atomically(storage.join(folder, 'sub', 'b.bin'), b'\0\1')
  assert storage.read_text(storage.join(folder, 'a.json')) == '{"x": 1}'
  assert storage.isfile(storage.join(folder, 'a.json'))
  assert storage.isdir(storage.join(folder, 'sub'))
  assert not storage.exists(storage.join(folder, 'missing'))
  assert storage.listdir(folder) == ['a.json', 'sub']
  assert storage.glob(folder, '*.json') == [storage.join(folder, 'a.json')]
  assert storage.files_under(folder) == [storage.join(folder, 'a.json'),
                                         storage.join(folder, 'sub', 'b.bin')]
  with storage.local_file(storage.join(folder, 'sub', 'b.bin')) as local:
    assert open(local, 'rb').read() == b'\0\1'
  with storage.local_output(storage.join(folder, 'c.txt')) as local:
    with open(local, 'w') as f:
      f.write('written locally')
  assert storage.read_text(storage.join(folder, 'c.txt')) == 'written locally'
  storage.copytree(folder, storage.join(root, 'copy'))
  assert storage.listdir(storage.join(root, 'copy')) == ['a.json', 'c.txt', 'sub']
  storage.move(folder, storage.join(root, 'moved'))
  assert not storage.exists(folder)
  assert storage.read_bytes(storage.join(root, 'moved', 'sub', 'b.bin')) == b'\0\1'
  # Another process sees what this one wrote, and this one what it wrote.
  subprocess.run([sys.executable, '-c', 'from cyclegan_jax import storage; '
                  f'storage.write_text_atomically("{root}/moved/d.txt", "x")'], cwd=REPO,
                 check=True)
  assert 'd.txt' in storage.listdir(storage.join(root, 'moved'))


def test_other_schemes_and_a_missing_extra_are_one_line(monkeypatch):
  with pytest.raises(ValueError, match=r'^s3://b/w: expected a local path or gs://bucket/path '
                                       r'\(Google Cloud Storage\)$'):
    storage.exists('s3://b/w')
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec',
                      lambda name, *args: None if name == 'gcsfs' else real(name, *args))
  with pytest.raises(ImportError, match=r'^gs://b/w: gs:// paths need the optional extra "gcs" '
                                        r'\(gcsfs is missing\): pip install -e "\.\[gcs\]"$'):
    storage.files_under('gs://b/w')


def test_a_mirror_copies_up_what_changed_and_grows_a_kept_file(bucket):
  storage.write_text_atomically(f'{bucket}/w/train.log', 'first run\n')
  mirror = storage.Mirror(f'{bucket}/w', keep=('train.log',))
  assert mirror.local != f'{bucket}/w' and os.path.isdir(mirror.local)
  with open(os.path.join(mirror.local, 'train.log'), 'a') as f:
    f.write('second run\n')
  os.makedirs(os.path.join(mirror.local, 'runs', 'r'))
  with open(os.path.join(mirror.local, 'runs', 'r', 'events'), 'w') as f:
    f.write('1')
  mirror.sync()
  assert storage.read_text(f'{bucket}/w/train.log') == 'first run\nsecond run\n'
  assert storage.read_text(f'{bucket}/w/runs/r/events') == '1'
  with open(os.path.join(mirror.local, 'runs', 'r', 'events'), 'a') as f:
    f.write('2')
  local = mirror.local
  mirror.close()
  assert storage.read_text(f'{bucket}/w/runs/r/events') == '12'
  assert not os.path.exists(local)
  here = storage.Mirror('/tmp/some/workdir')
  assert here.local == '/tmp/some/workdir'  # A local workdir is its own mirror.


def test_one_trainer_per_gcs_workdir_and_a_stale_lock_is_taken_over(bucket, monkeypatch,
                                                                     capsys):
  workdir = f'{bucket}/w'
  lock = f'{workdir}/{workdir_lock.LOCK_FILE}'
  with workdir_lock.hold(workdir):
    assert storage.read_text(lock).startswith(f'pid {os.getpid()} on host ')
    with pytest.raises(workdir_lock.WorkdirBusyError, match=(
        rf'^{workdir}: another trainer is using this workdir \(pid {os.getpid()} on host '
        r'.*, last renewed \d+ s ago\); wait for it to end \(or stop it\), or use another '
        r'--workdir$')):
      with workdir_lock.hold(workdir):
        pass
  assert not storage.exists(lock)  # Released.
  # A lock that a killed trainer left, not renewed for longer than STALE_SECONDS.
  storage.write_text_atomically(lock, 'pid 1 on host gone')
  with pytest.raises(workdir_lock.WorkdirBusyError, match='pid 1 on host gone'):
    with workdir_lock.hold(workdir):
      pass
  monkeypatch.setattr(workdir_lock, 'STALE_SECONDS', 1)
  time.sleep(1.5)
  with workdir_lock.hold(workdir):
    assert storage.read_text(lock).startswith(f'pid {os.getpid()} ')
  assert f'warning: {lock}: took over a stale lock of pid 1 on host gone' in capsys.readouterr().err


def test_the_holder_renews_its_lock_and_notices_a_takeover(bucket, monkeypatch, capsys):
  workdir = f'{bucket}/w'
  monkeypatch.setattr(workdir_lock, 'RENEW_SECONDS', 0.2)
  def generation():
    blob = workdir_lock._blob(f'{workdir}/{workdir_lock.LOCK_FILE}')
    blob.reload()
    return blob.generation

  with workdir_lock.hold(workdir):
    first = generation()
    time.sleep(0.8)
    assert generation() != first  # Renewed.
    # Taken over behind its back.
    workdir_lock._blob(f'{workdir}/{workdir_lock.LOCK_FILE}').upload_from_string(
        'pid 2 on host other')
    time.sleep(0.8)
  assert 'another trainer took over this workdir\'s lock' in capsys.readouterr().err
  assert storage.read_text(f'{workdir}/{workdir_lock.LOCK_FILE}') == 'pid 2 on host other'
  with pytest.raises(exceptions.NotFound):
    workdir_lock._blob(f'{bucket}/none').reload()


def _tiny_args(image_folder, weights, steps, evaluate_every):
  return ['--config=configs/tiny.py', f'--config.data.image_dir={image_folder}',
          f'--config.train.num_steps={steps}', f'--config.eval.every_steps={evaluate_every}',
          f'--config.eval.inception_weights={weights}', '--config.eval.num_images=3',
          '--config.eval.batch_size=3', '--config.eval.kid_subsets=2',
          '--config.eval.kid_subset_size=2']


@pytest.mark.slow
def test_training_resuming_and_scoring_a_gcs_workdir(image_folder, bucket, tmp_path):
  """main.py trains 4 steps in gs://.../w, a second run resumes it to 6; the
  workdir holds what a local one does, its checkpoints equal a local run's
  bit for bit, and evaluation, curves and the losses read back from it."""
  weights = f'{bucket}/inception.npz'
  local_weights = str(tmp_path / 'inception.npz')
  inception_weights.save(local_weights, inception.init_variables(seed=0))
  storage.copy(local_weights, weights)
  workdir = f'{bucket}/w'
  for steps, evaluate_every in ((4, 0), (6, 100)):  # FID/KID at the end of the second.
    result = subprocess.run([sys.executable, 'main.py', f'--workdir={workdir}',
                             *_tiny_args(image_folder, weights, steps, evaluate_every)], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  assert 'Resuming from the checkpoint at step 4.' in result.stderr

  names = storage.listdir(workdir)
  for name in ('config.json', 'checkpoints', 'samples', 'eval', 'train.log'):
    assert name in names, names
  assert workdir_lock.LOCK_FILE not in names  # Released at the end.
  assert len([n for n in names if n.startswith('events.out.tfevents.')]) == 2  # One per run.
  assert storage.listdir(f'{workdir}/checkpoints') == ['2', '4', '6']
  assert storage.listdir(f'{workdir}/samples') == [f'step_{s:08d}.png' for s in (2, 4, 6)]
  log = storage.read_text(f'{workdir}/train.log')
  assert log.count("XLA_FLAGS=") == 2  # The log grew across the resumed run.
  evals = storage.listdir(f'{workdir}/eval')
  assert {'best.json', 'latest.json', 'curves.png', 'step_00000006.json'} <= set(evals), evals
  losses = curves.loss_history(workdir)
  assert [step for step, _ in losses['cycle/aba']] == [2, 4, 6]

  # The same runs in a local workdir: the same state, bit for bit.
  config = tiny.get_config()
  config.data.image_dir = image_folder
  local = str(tmp_path / 'local')
  for steps in (4, 6):
    config.train.num_steps = steps
    train.train_and_evaluate(config, local)
  (step_gs, on_gcs), (step_local, here) = (checkpoints.load_state(w) for w in (workdir, local))
  assert step_gs == step_local == 6
  assert jax.tree.all(jax.tree.map(np.array_equal, on_gcs, here))

  # Scored again from the store, in this process.
  scores = evaluate.evaluate_workdir(workdir)
  assert scores['step'] == 6
  latest = json.loads(storage.read_text(f'{workdir}/eval/latest.json'))
  assert latest['AtoB'] == scores['AtoB']
