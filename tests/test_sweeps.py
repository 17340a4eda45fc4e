"""Sweeps: several runs of one config in one program, each its solo run."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import tiny
from configs import tiny_cut
from configs import tiny_unsb
from cyclegan_jax import checkpoints
from cyclegan_jax import config_checks
from cyclegan_jax import configuration
from cyclegan_jax import extract
from cyclegan_jax import inference
from cyclegan_jax import memory
from cyclegan_jax import models
from cyclegan_jax import sweeps
from cyclegan_jax import train
from cyclegan_jax import translate
from tests import test_distributed
from tests import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEPT = {'cyclegan': 'lambda_cycle', 'cut': 'lambda_nce', 'unsb': 'lambda_sb'}
UNSB_TAU = 0.05  # UNSB's bridge noise, swept (one value) with lambda_sb.


def _config(kind, image_folder, steps=3):
  config = {'cut': tiny_cut, 'unsb': tiny_unsb}.get(kind, tiny).get_config()
  config.data.image_dir = image_folder
  config.train.num_steps = steps
  config.checkpoint_every_steps = 2
  config.sample_every_steps = 100
  return config


def _sweep(kind, image_folder, steps=3, traced=True):
  """Seeds 0 and 1; `traced`: with a loss weight and the learning rate swept
  too (one value each: they are arrays inside the step, not constants)."""
  config = _config(kind, image_folder, steps)
  config.sweep.seed = (0, 1)
  if traced:
    config.sweep.train[SWEPT[kind]] = (5.0,)
    config.sweep.train.lr = (2e-4,)
    if kind == 'unsb':
      config.sweep.model.unsb_tau = (UNSB_TAU,)
  return config


def _solo(kind, image_folder, seed, steps=3, traced=True):
  config = _config(kind, image_folder, steps)
  config.seed = seed
  if traced:
    config.train[SWEPT[kind]] = 5.0
    config.train.lr = 2e-4
    if kind == 'unsb':
      config.model.unsb_tau = UNSB_TAU
  return config


def _largest_differences(run, solo, config) -> dict:
  """Max |difference| of every kernel and of what each generator outputs for
  one fixed image (the checks of tests/test_distributed.py's 4-devices-vs-1:
  conv biases before instance norm have no true gradient, so Adam turns
  their rounding noise into +-lr steps that change no output)."""
  differences = {}
  for name in ('gen_ab', 'gen_ba', 'gen', 'disc', 'disc_a', 'disc_b', 'patch_mlp'):
    if not hasattr(solo, name):
      continue
    a, b = getattr(run, name).params, getattr(solo, name).params
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
      if 'kernel' in jax.tree_util.keystr(path):
        differences[f'{name}{jax.tree_util.keystr(path)}'] = float(np.max(np.abs(x - y)))
    if name.startswith('gen'):
      image = np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
      net = models.create_generator(config.model)
      out = [net.apply({'params': p}, image, train=False) for p in (a, b)]
      differences[f'output/{name}'] = float(np.max(np.abs(out[0] - out[1])))
  return differences


@pytest.fixture(scope='module')
def cyclegan_sweep(image_folder, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('sweep'))
  state = train.train_and_evaluate(_sweep('cyclegan', image_folder), workdir)
  return workdir, jax.tree.map(np.asarray, state)


def test_runs_are_the_product_of_the_swept_fields_seed_first():
  config = tiny.get_config()
  config.sweep.train.lambda_cycle = (5.0, 10)
  config.sweep.seed = (0, 1)
  runs = sweeps.runs(config)
  assert [run.name for run in runs] == [
      'seed=0,lambda_cycle=5.0', 'seed=0,lambda_cycle=10', 'seed=1,lambda_cycle=5.0',
      'seed=1,lambda_cycle=10']
  single = sweeps.run_config(config, runs[3])
  assert single.seed == 1 and single.train.lambda_cycle == 10.0
  assert isinstance(single.train.lambda_cycle, float) and not sweeps.is_sweep(single)
  assert sweeps.find(config, '2') == runs[2] == sweeps.find(config, 'seed=1,lambda_cycle=5.0')
  with pytest.raises(ValueError, match=r'--run=7: no such run; this sweep has 0: seed=0,'):
    sweeps.find(config, '7')
  assert sweeps.runs(tiny.get_config()) == []


@pytest.mark.parametrize('field, values, message', [
    ('seed', (0, 1.5), r'config.sweep.seed=\(0, 1.5\): expected a tuple of integers'),
    ('train.lr', ('a',), r'config.sweep.train.lr=\(\'a\',\): expected a tuple of numbers'),
    ('seed', (1, 1), 'a value is given twice'),
    ('train.lambda_identity', (0.0, 0.5), '0 turns the loss term off'),
])
def test_bad_sweep_values_are_refused_naming_the_field(field, values, message):
  config = tiny.get_config()
  group, _, name = field.rpartition('.')
  (config.sweep[group] if group else config.sweep)[name] = values
  with pytest.raises(ValueError, match=message):
    config_checks.validate(config, 1)


def test_a_run_with_an_impossible_value_is_named():
  config = tiny.get_config()
  config.sweep.train.lr = (1e-3, -1.0)
  with pytest.raises(ValueError, match=r'run 1 \(lr=-1.0\): config.train.lr'):
    config_checks.validate(config, 1)


def test_runs_and_devices_must_divide():
  assert sweeps.mesh_shape(4, 2) == (2, 1) and sweeps.mesh_shape(2, 4) == (2, 2)
  with pytest.raises(ValueError, match='3 runs on 2 devices'):
    sweeps.mesh_shape(3, 2)


def test_a_multi_process_sweep_keeps_each_run_within_one_process():
  config = tiny.get_config()
  config.sweep.seed = (0, 1)
  config.train.batch_size = 2
  config_checks.validate(config, 4, process_count=2)  # Each run: the 2 devices of one process.
  with pytest.raises(ValueError, match=r'each run 2 devices, more than the 1 of one process'):
    config_checks.validate(config, 4, process_count=4)


def test_a_sweep_that_cannot_fit_says_how_many_runs_would(image_folder, tmp_path,
                                                         monkeypatch):
  config = _sweep('cyclegan', image_folder, steps=1)
  needs = {}
  real = memory.compiled_memory_bytes

  def compiled_memory_bytes(compiled, arguments=True):
    needs['bytes'] = real(compiled, arguments)
    return needs['bytes']
  monkeypatch.setattr(memory, 'compiled_memory_bytes', compiled_memory_bytes)
  # Room for one of the two runs, not for both.
  monkeypatch.setattr(memory, 'available_bytes',
                      lambda device=None: int(needs.get('bytes', 0) * 0.6))
  with pytest.raises(memory.InsufficientMemoryError) as raised:
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  message = str(raised.value)
  assert '\n' not in message
  assert message.startswith('a train step of 1 32x32 images for each of 2 runs needs ')
  assert 'sweep fewer runs (about 1 would fit) or use more devices' in message


def _main(*args):
  return subprocess.run([sys.executable, 'main.py', *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300)


def test_command_line_refuses_unsweepable_and_empty_sweeps(tmp_path):
  base = ['--config=configs/tiny.py', f'--workdir={tmp_path}/w']
  result = _main(*base, "--config.sweep.model.ngf=(8,16)")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(
      'error: --config.sweep.model.ngf: config.model.ngf cannot be swept'), result.stderr
  result = _main(*base, '--config.sweep.seed=()')
  assert result.returncode == 2
  assert 'an empty sweep' in result.stderr.strip().splitlines()[-1], result.stderr
  assert not os.path.exists(tmp_path / 'w')


# Trains a 2-run sweep, or one of its runs alone, in a fresh process (with
# tests/test_distributed.py's batch-invariant convolutions) and saves each
# run's state, flattened, to RUN.npz.
SWEEP_OR_SOLO = """
import sys
import jax, numpy as np
from tests import test_sweeps
from cyclegan_jax import train
kind, image_dir, workdir, steps, traced, seed = sys.argv[1:]
steps, traced = int(steps), traced == 'traced'
flat = lambda state: {jax.tree_util.keystr(p): np.asarray(x)
                      for p, x in jax.tree_util.tree_leaves_with_path(state)}
if seed == 'sweep':
  sweep = train.train_and_evaluate(test_sweeps._sweep(kind, image_dir, steps, traced),
                                   workdir + '/sweep')
  for i in (0, 1):
    one_run = jax.tree.map(lambda x, i=i: np.asarray(x)[i], sweep)
    np.savez(f'{workdir}/sweep{i}.npz', **flat(one_run))
else:
  solo = train.train_and_evaluate(test_sweeps._solo(kind, image_dir, int(seed), steps, traced),
                                  f'{workdir}/solo{seed}')
  np.savez(f'{workdir}/solo{seed}.npz', **flat(solo))
"""


def _train_in_process(args, devices):
  result = subprocess.run(
      [sys.executable, '-c', SWEEP_OR_SOLO, *map(str, args)], cwd=REPO, capture_output=True,
      text=True, timeout=600,
      env=xla_flags.with_cpu_devices(devices, test_distributed.BATCH_INVARIANT_CONVS))
  assert result.returncode == 0, result.stderr[-3000:]


_SOLO_RUNS = {}  # (kind, data, steps, traced, seed) -> its solo run's state, trained once.


def _sweep_and_solo_runs(kind, image_folder, tmp_path, devices, steps, traced):
  """[(run of the sweep, its solo run)] as flat {path: array} dicts. A solo
  run (always on one device) is trained once for all the tests that need it."""
  args = [kind, image_folder, tmp_path, steps, 'traced' if traced else 'seeds']
  _train_in_process([*args, 'sweep'], devices)
  pairs = []
  for seed in (0, 1):
    key = (kind, image_folder, steps, traced, seed)
    if key not in _SOLO_RUNS:
      _train_in_process([*args, seed], 1)
      _SOLO_RUNS[key] = dict(np.load(tmp_path / f'solo{seed}.npz'))
    pairs.append((dict(np.load(tmp_path / f'sweep{seed}.npz')), _SOLO_RUNS[key]))
  return pairs


@pytest.mark.slow
@pytest.mark.parametrize('kind, devices', [('cyclegan', 1), ('cyclegan', 2), ('cut', 1)])
def test_a_seed_sweep_trains_each_run_bit_for_bit_as_alone(kind, devices, image_folder,
                                                           tmp_path):
  """Seeds 0 and 1 swept, two runs on one device or one on each of two: after
  3 steps (with a pool that fills, B images at random, crops and flips) each
  run's whole state equals, bit for bit, that of the run main.py trains alone
  on one device with its seed."""
  for run, solo in _sweep_and_solo_runs(kind, image_folder, tmp_path, devices, 3, False):
    assert run.keys() == solo.keys() and int(run['.step']) == 3
    different = [k for k in run if not np.array_equal(run[k], solo[k])]
    assert not different, different


# Process PROCESS_ID of two (one CPU device each) trains a 2-run sweep of
# seeds and saves the run it holds to sweepRUN.npz.
TWO_PROCESS_SWEEP = """
import sys
import jax, numpy as np
from cyclegan_jax import distributed, train
from tests import test_sweeps
image_dir, workdir, port, process_id = sys.argv[1:]
distributed.initialize(f'127.0.0.1:{port}', 2, int(process_id))
config = test_sweeps._sweep('cyclegan', image_dir, 3, traced=False)
state = train.train_and_evaluate(config, workdir + '/sweep')
runs = train.Runs(config, workdir + '/sweep')
runs.place(jax.make_mesh((2, 1), ('runs', 'data')))
(run, run_state), = runs.states(state).items()
np.savez(f'{workdir}/sweep{run}.npz', **{jax.tree_util.keystr(p): x for p, x in
                                         jax.tree_util.tree_leaves_with_path(run_state)})
print('holds run', run, 'of process', jax.process_index())
"""


@pytest.mark.slow
def test_two_processes_train_a_sweep_one_run_each_bit_for_bit_as_alone(image_folder, tmp_path):
  """Two processes of one device each: each holds, reads the data of and
  writes the outputs of one run, and that run's whole state after 3 steps
  equals its solo run's."""
  port = test_distributed._free_port()  # pylint: disable=protected-access
  env = xla_flags.with_cpu_devices(1, test_distributed.BATCH_INVARIANT_CONVS)
  processes = [subprocess.Popen(
      [sys.executable, '-c', TWO_PROCESS_SWEEP, image_folder, tmp_path, str(port), str(i)],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for i in range(2)]
  for i, process in enumerate(processes):
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-4000:]
    assert f'holds run {i} of process {i}' in output
  args = ['cyclegan', image_folder, tmp_path, 3, 'seeds']
  for seed in (0, 1):
    key = ('cyclegan', image_folder, 3, False, seed)
    if key not in _SOLO_RUNS:
      _train_in_process([*args, seed], 1)
      _SOLO_RUNS[key] = dict(np.load(tmp_path / f'solo{seed}.npz'))
    run, solo = dict(np.load(tmp_path / f'sweep{seed}.npz')), _SOLO_RUNS[key]
    assert run.keys() == solo.keys() and int(run['.step']) == 3
    different = [k for k in run if not np.array_equal(run[k], solo[k])]
    assert not different, different
  sweep = tmp_path / 'sweep'
  assert sorted(os.listdir(sweep / 'checkpoints')) == ['2', '3']
  for name in ('seed=0', 'seed=1'):
    assert sorted(os.listdir(sweep / 'runs' / name / 'samples')) == ['step_00000003.png']
  summary = json.loads((sweep / sweeps.SUMMARY_FILE).read_text())
  assert [run['name'] for run in summary['runs']] == ['seed=0', 'seed=1']


@pytest.mark.slow
def test_swept_hyperparameters_start_each_run_as_alone(image_folder, tmp_path):
  """A loss weight and the learning rate swept as well (arrays in the step,
  where a run alone has constants): after one step the images each run
  translated (its pools, made from its initial weights) agree with its solo
  run's within 1e-5, and its keys and pool counts are equal. (Its weights are
  not compared: an array rounds differently from a constant XLA folds, and
  Adam's first step turns the sign of that noise in a near-zero gradient into
  +-lr, as tests/test_distributed.py explains.)"""
  for run, solo in _sweep_and_solo_runs('cyclegan', image_folder, tmp_path, 1, 1, True):
    assert run.keys() == solo.keys() and int(run['.step']) == int(solo['.step']) == 1
    assert np.array_equal(run['.rng'], solo['.rng'])
    pools = [k for k in run if k.endswith('.images')]
    assert len(pools) == 2
    worst = max((float(np.max(np.abs(run[k] - solo[k]))), k) for k in pools)
    assert worst[0] < 1e-5, worst
    counts = [k for k in run if k.endswith('num_stored')]
    assert counts and all(np.array_equal(run[k], solo[k]) for k in counts)


def test_each_run_writes_its_own_outputs_and_the_summary(cyclegan_sweep):
  workdir, _ = cyclegan_sweep
  names = ['seed=0,lr=0.0002,lambda_cycle=5.0', 'seed=1,lr=0.0002,lambda_cycle=5.0']
  assert sorted(os.listdir(os.path.join(workdir, 'runs'))) == names
  for name in names:
    folder = os.path.join(workdir, 'runs', name)
    assert os.path.isfile(os.path.join(folder, 'samples', 'step_00000003.png'))
    assert glob.glob(os.path.join(folder, 'events.out.tfevents.*'))
  summary = json.load(open(os.path.join(workdir, 'sweep.json')))
  assert [run['name'] for run in summary['runs']] == names
  assert summary['runs'][1]['values'] == {'seed': 1, 'train.lr': 0.0002,
                                          'train.lambda_cycle': 5.0}
  assert summary['runs'][0]['step'] == 3 and 'gen/total' in summary['runs'][0]['losses']
  assert summary['groups'][0]['runs'] == names  # Same values but the seed: one group.


def test_services_take_a_run_and_refuse_a_sweep_without_one(cyclegan_sweep, image_folder,
                                                           tmp_path):
  workdir, sweep = cyclegan_sweep
  with pytest.raises(ValueError, match=r'holds a sweep; choose a run with --run=NAME or '
                     r'--run=INDEX \(0: seed=0,lr=0.0002,lambda_cycle=5.0, 1: seed=1'):
    translate.translate_folder(workdir, os.path.join(image_folder, 'testA'), str(tmp_path / 'o'))
  with pytest.raises(ValueError, match='--run=5: no such run'):
    inference.restore(workdir, run='5')
  restored = inference.restore(workdir, 'AtoB', run='1')
  np.testing.assert_array_equal(restored.generator.params['Conv_0']['kernel'],
                                sweep.gen_ab.params['Conv_0']['kernel'][1])
  assert restored.config.seed == 1 and not sweeps.is_sweep(restored.config)
  written = translate.translate_folder(workdir, os.path.join(image_folder, 'testA'),
                                       str(tmp_path / 'out'),
                                       run='seed=1,lr=0.0002,lambda_cycle=5.0')
  assert len(written) == len(os.listdir(os.path.join(image_folder, 'testA')))
  with pytest.raises(ValueError, match='holds one run, not a sweep'):
    inference.load_config(_solo_workdir(tmp_path, image_folder), '0')


def _solo_workdir(tmp_path, image_folder) -> str:
  workdir = tmp_path / 'solo_config'
  os.makedirs(workdir)
  checkpoints.save_config(_solo('cyclegan', image_folder, 0), str(workdir))
  return str(workdir)


def test_resuming_with_another_sweep_is_refused(cyclegan_sweep, image_folder, tmp_path):
  workdir = str(tmp_path / 'copy')
  shutil.copytree(cyclegan_sweep[0], workdir)
  config = _sweep('cyclegan', image_folder, steps=4)
  config.sweep.seed = (0, 2)
  with pytest.raises(ValueError, match=r'holds checkpoints of the runs seed=0,lr=0.0002,'
                     r'lambda_cycle=5.0, seed=1,.*and the config now trains the runs seed=0'):
    train.train_and_evaluate(config, workdir)
  solo = _solo('cyclegan', image_folder, 0, steps=4)
  with pytest.raises(ValueError, match=r'config now trains one run \(no sweep\)'):
    train.train_and_evaluate(solo, workdir)


def test_an_extracted_run_resumes_alone_as_it_would_have_in_the_sweep(image_folder, tmp_path):
  """A 4-step sweep; run 1 extracted at step 2 and trained alone to step 4
  ends where the sweep's run 1 ends (to the rounding of a solo run)."""
  sweep_dir = str(tmp_path / 'sweep')
  sweep = train.train_and_evaluate(_sweep('cyclegan', image_folder, steps=4), sweep_dir)
  output = str(tmp_path / 'run1')
  line = extract.extract_run(sweep_dir, '1', output, step=2)
  assert 'Wrote run 1 (seed=1,lr=0.0002,lambda_cycle=5.0) at step 2' in line
  assert '--config.seed=1 --config.train.lr=0.0002 --config.train.lambda_cycle=5.0' in line
  config = configuration.load(output)
  assert config.seed == 1 and not sweeps.is_sweep(config)
  restored = jax.tree.map(np.asarray, checkpoints.load_state(output)[1])
  saved = jax.tree.map(np.asarray, checkpoints.load_state(sweep_dir, 2)[1])
  assert all(np.array_equal(a, b[1]) for a, b in zip(jax.tree.leaves(restored),
                                                     jax.tree.leaves(saved)))
  alone = train.train_and_evaluate(config, output)
  assert int(alone.step) == 4
  differences = _largest_differences(jax.tree.map(lambda x: np.asarray(x[1]), sweep),
                                     jax.tree.map(np.asarray, alone), config)
  assert max(differences.values()) < 1e-5, differences
  with pytest.raises(ValueError, match='exists and is not an empty folder'):
    extract.extract_run(sweep_dir, '1', output)
  with pytest.raises(ValueError, match='holds one run, not a sweep'):
    extract.extract_run(output, '0', str(tmp_path / 'again'))


NUM_STEPS = 12
KILLED_SWEEP = ['--config=configs/tiny.py', f'--config.train.num_steps={NUM_STEPS}',
                '--config.train.batch_size=2', '--config.train.pool_size=3',
                '--config.model.dropout=True', '--config.checkpoint_every_steps=2',
                '--config.keep_checkpoints=20', '--config.sample_every_steps=1000',
                '--config.sweep.seed=(0,1)', '--config.sweep.train.lambda_cycle=(5.0,10.0)']


def _final(workdir):
  manager = ocp.CheckpointManager(checkpoints.checkpoint_dir(str(workdir)))
  assert manager.latest_step() == NUM_STEPS
  return jax.tree.map(np.asarray, manager.restore(NUM_STEPS, args=ocp.args.StandardRestore()))


def _identical(a, b) -> bool:
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(leaves_a) == len(leaves_b) and all(
      np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b))


@pytest.mark.slow
def test_a_sweep_reruns_and_resumes_after_sigkill_bit_for_bit(image_folder, tmp_path):
  """4 runs (2 seeds x 2 weights), with dropout and a pool that fills and
  swaps: a rerun is bit-identical, and so is a sweep killed with SIGKILL
  after its first checkpoint and run again."""
  command = lambda w: [sys.executable, 'main.py', *KILLED_SWEEP, f'--workdir={w}',
                       f'--config.data.image_dir={image_folder}']
  for name in ('first', 'again'):
    result = subprocess.run(command(tmp_path / name), cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
  assert _identical(_final(tmp_path / 'first'), _final(tmp_path / 'again'))
  killed = tmp_path / 'killed'
  process = subprocess.Popen(command(killed), cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while not os.path.isdir(killed / 'checkpoints' / '2') and time.time() < deadline:
    time.sleep(0.01)
  process.send_signal(signal.SIGKILL)
  process.wait()
  steps = [int(s) for s in os.listdir(killed / 'checkpoints') if s.isdigit()]
  assert steps and max(steps) < NUM_STEPS
  result = subprocess.run(command(killed), cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resuming from the checkpoint at step' in result.stderr
  assert _identical(_final(killed), _final(tmp_path / 'first'))


@pytest.mark.slow
def test_unsb_sweeps_its_weights_and_noise_each_run_as_alone(image_folder, tmp_path):
  """UNSB with lambda_SB and tau swept (one value each, beside seeds 0 and 1;
  arrays in the step where a solo run has constants): after 2 steps each
  run's whole state equals its solo run's (lambda_SB 5, tau 0.05), bit for
  bit as measured here. (A solo run with the default tau would differ.)"""
  for run, solo in _sweep_and_solo_runs('unsb', image_folder, tmp_path, 1, 2, True):
    assert run.keys() == solo.keys() and int(run['.step']) == 2
    assert {k.split('.')[1] for k in run if '.params' in k} == {'gen', 'disc', 'entropy',
                                                                'patch_mlp'}
    different = [k for k in run if not np.array_equal(run[k], solo[k])]
    assert not different, different
