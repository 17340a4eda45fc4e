import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from cyclegan_jax.data import quickstart_data
from cyclegan_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quickstart_config():
  spec = importlib.util.spec_from_file_location(
      'quickstart', os.path.join(REPO, 'configs', 'quickstart.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_dataset_is_built_once_from_packaged_photos(tmp_path):
  root = quickstart_data.build('skimage_dusk', str(tmp_path))
  assert root == str(tmp_path / 'skimage_dusk')
  for split, count in quickstart_data.COUNTS.items():
    assert len(os.listdir(os.path.join(root, split))) == count
  first = os.path.join(root, 'trainA', '0000.png')
  stamp = os.stat(first).st_mtime_ns
  assert quickstart_data.build('skimage_dusk', str(tmp_path)) == root
  assert os.stat(first).st_mtime_ns == stamp  # Reused, not rebuilt.
  assert not [n for n in os.listdir(tmp_path) if n.startswith('.building-')]
  with pytest.raises(ValueError, match='config.data.builtin'):
    quickstart_data.build('imagenet', str(tmp_path))


def test_dusk_darkens_and_warms():
  day = np.full((4, 4, 3), 200, np.uint8)
  r, g, b = quickstart_data.dusk(day)[0, 0].astype(int)
  assert r > g > b and r < 200 and b < 100


def test_quickstart_config_trains_a_few_steps(tmp_path):
  config = _quickstart_config()
  config.data.cache_dir = str(tmp_path / 'cache')
  config.train.num_steps = 2
  state = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert int(state.step) == 2
  assert os.path.isfile(tmp_path / 'run' / 'samples' / 'step_00000002.png')


# TensorFlow's C++ start-up notices ("oneDNN custom operations are on", the
# CPU features it was not built for), written straight to the process's
# stderr by absl's C++ logging before it is initialised, on CPUs with
# AVX-512 VNNI/BF16: no Python logging setting reaches them (nor, in TF 2.21,
# TF_CPP_MIN_LOG_LEVEL), so the console checks leave them out.
_TF_CPP_NOTICE = re.compile(r'^(WARNING: All log messages before absl::InitializeLog\(\)'
                            r'|[IWE]\d{4} [\d:.]+ +\d+ \w+\.cc:\d+\]'
                            r'|To enable the following instructions: )')


def _terminal_lines(text: str) -> list[str]:
  """The lines a terminal shows for `text`: each line as its last carriage
  return leaves it (a progress bar redraws itself with \\r), empty ones and
  TensorFlow's C++ start-up notices dropped."""
  return [shown for shown in (line.split('\r')[-1].strip() for line in text.split('\n'))
          if shown and not _TF_CPP_NOTICE.match(shown)]


@pytest.mark.slow
def test_quickstart_console_is_a_progress_bar_and_a_line_per_event(tmp_path):
  """main.py's quick start prints the parameter counts, the data, a progress
  bar, one line per log step and one per sample grid or checkpoint; the
  libraries' INFO lines go to W/train.log only, unless --verbosity asks."""
  workdir = tmp_path / 'run'
  args = [sys.executable, 'main.py', '--config=configs/quickstart.py', f'--workdir={workdir}',
          f'--config.data.cache_dir={tmp_path / "cache"}', '--config.log_every_steps=2',
          '--config.sample_every_steps=4', '--config.checkpoint_every_steps=4']
  # Bytes: text mode would turn the bar's carriage returns into line ends.
  run = subprocess.run(args + ['--config.train.num_steps=4'], cwd=REPO, capture_output=True,
                       timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  printed = _terminal_lines(run.stdout.decode())
  assert printed[0] == ('gen_ab: 272,515 parameters; gen_ba: 272,515 parameters; '
                        'disc_a: 175,089 parameters; disc_b: 175,089 parameters')
  # The last lines: how far the translations are from the known grade.
  assert len(printed) == 3 and printed[1].startswith('day -> dusk (AtoB): PSNR ')
  assert printed[2].startswith('dusk -> day (BtoA): PSNR ') and 'checkerboard' in printed[2]
  lines = _terminal_lines(run.stderr.decode())
  assert len(lines) == 6, lines
  assert lines[0] == 'Data: 240 A and 240 B training images, 240 steps per epoch, 4 steps in all.'
  assert lines[1].startswith('step 2/4: cycle/aba=') and 'gen/total=' in lines[1]
  assert lines[2].startswith('step 4/4: ')
  assert lines[3] == f'step 4: samples {workdir}/samples/step_00000004.png'
  assert lines[4] == f'step 4: checkpoint {workdir}/checkpoints/4'
  assert lines[5].startswith('train: 100%') and '4/4' in lines[5]
  log = (workdir / 'train.log').read_text()
  assert 'Saving checkpoint at step 4' in log and 'step 2/4: cycle/aba=' in log

  # Resumed with --verbosity=0: the INFO lines are on the terminal too.
  more = subprocess.run(args + ['--config.train.num_steps=6', '--verbosity=0'], cwd=REPO,
                        capture_output=True, text=True, timeout=600)
  assert more.returncode == 0, more.stderr[-3000:]
  assert 'Resuming from the checkpoint at step 4.' in more.stderr
  assert 'Saving checkpoint at step 6' in more.stderr
  assert log in (workdir / 'train.log').read_text()  # Appended to.
