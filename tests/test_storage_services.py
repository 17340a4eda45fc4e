"""The modes that read a trained workdir and write an output: the results page
(--mode=test), report, export, extract and import_torch, with the workdir
and the output on Cloud Storage (a local emulator, tests/gcs.py), each
against the same mode on a local copy: the same files, the same contents."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import tiny
from cyclegan_jax import checkpoints
from cyclegan_jax import configuration
from cyclegan_jax import curves
from cyclegan_jax import extract
from cyclegan_jax import report
from cyclegan_jax import results_page
from cyclegan_jax import storage
from cyclegan_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytest.importorskip('gcsfs', reason='the gcs extra')
pytest.importorskip('google.cloud.storage', reason='the gcs extra')

RUN_NAMES = ('seed=0', 'seed=1')
MISSING_BUCKET = 'gs://no-such-bucket-for-cyclegan-jax-tests'
PROTOCOL = {'fid_mode': 'legacy', 'test_data': {'source': '/data', 'split': 'test', 'size': 32,
                                                'num_images': 0},
            'inception_weights_sha256': 'ab' * 32, 'kid_subsets': 100, 'kid_subset_size': 1000}


@pytest.fixture(scope='module')
def sweep_workdir(image_folder, tmp_path_factory):
  """A local 2-step tiny sweep of seeds 0 and 1 (read only: tests copy it)."""
  config = tiny.get_config()
  config.data.image_dir = image_folder
  config.train.num_steps = 2
  config.checkpoint_every_steps = 2
  config.sample_every_steps = 2
  config.sweep.seed = (0, 1)
  workdir = str(tmp_path_factory.mktemp('sweep'))
  train.train_and_evaluate(config, workdir)
  return workdir


def _local_copy(workdir, tmp_path, where, name='w') -> str:
  """A copy of `workdir` at tmp_path/where/name (named like the gs:// one)."""
  copy = str(tmp_path / where / name)
  shutil.copytree(workdir, copy)
  return copy


def _relative_files(folder) -> list[str]:
  folder = storage.absolute(folder)
  return [os.path.relpath(path, folder) for path in storage.files_under(folder)]


def _same_files(local, remote) -> list[str]:
  """The files under both, byte for byte alike; returns their relative names."""
  names = _relative_files(local)
  assert _relative_files(remote) == names
  for name in names:
    assert storage.read_bytes(storage.join(remote, name)) == storage.read_bytes(
        storage.join(local, name)), name
  return names


def _evaluated(folder, scores):
  """eval/step_*.json and latest.json as evaluation writes them (through
  storage: local or gs://); scores = {step: {direction: fid}}."""
  for step, per_direction in sorted(scores.items()):
    result = {'step': step, 'protocol': PROTOCOL, **{
        d: {'fid': fid, 'kid_mean': fid / 1000, 'kid_std': 0.0, 'num_fake': 4, 'num_real': 4}
        for d, fid in per_direction.items()}}
    for name in (f'step_{step:08d}.json', 'latest.json'):
      storage.makedirs(storage.join(folder, 'eval'))
      storage.write_text_atomically(storage.join(folder, 'eval', name), json.dumps(result))


def test_results_page_into_a_gcs_workdir(one_step_workdir, bucket, tmp_path):
  """The page, its images and the curves plot (drawn from the gs:// event
  files) are the files a local workdir gets, byte for byte."""
  local = _local_copy(one_step_workdir, tmp_path, 'local')
  remote = f'{bucket}/w'
  storage.copytree(one_step_workdir, remote)
  for workdir in (local, remote):
    _evaluated(workdir, {1: {'AtoB': 50.0, 'BtoA': 60.0}})
    curves.write_plot(workdir)
  assert curves.loss_history(remote) == curves.loss_history(local)
  assert curves.loss_history(remote)  # Read from the event files on the store.

  pages = [results_page.write_results_page(w, num_test=2) for w in (local, remote)]
  assert pages == [f'{local}/results/1/index.html', f'{remote}/results/1/index.html']
  names = _same_files(f'{local}/results', f'{remote}/results')
  assert len(names) == 1 + 2 * 2 * 3 + 1  # The page, real | fake | rec of each, the plot.
  assert 'images/curves.png" alt="FID, KID and losses' in storage.read_text(pages[1])
  assert '<title>w, step 1</title>' in storage.read_text(pages[1])


def test_results_page_of_a_sweep_run_in_gcs(sweep_workdir, bucket, tmp_path):
  local = _local_copy(sweep_workdir, tmp_path, 'local')
  remote = f'{bucket}/w'
  storage.copytree(sweep_workdir, remote)
  pages = [results_page.write_results_page(w, num_test=1, run='1') for w in (local, remote)]
  assert pages[1] == f'{remote}/runs/{RUN_NAMES[1]}/results/2/index.html'
  _same_files(f'{local}/runs/{RUN_NAMES[1]}/results', f'{remote}/runs/{RUN_NAMES[1]}/results')


def test_report_of_gcs_workdirs_into_gcs(one_step_workdir, sweep_workdir, bucket, tmp_path):
  """A workdir and a sweep's two runs, reported from gs:// into gs://: the
  report a local report of local copies writes (report.json, report.md,
  the page and every image)."""
  workdirs = {}
  for where in ('local', 'remote'):
    for name, source in (('one', one_step_workdir), ('sweep', sweep_workdir)):
      if where == 'local':
        workdirs[where, name] = _local_copy(source, tmp_path, where, name)
      else:
        workdirs[where, name] = f'{bucket}/{name}'
        storage.copytree(source, workdirs[where, name])
    _evaluated(workdirs[where, 'one'], {1: {'AtoB': 50.0, 'BtoA': 60.0}})
    for seed, fid in ((0, 40.0), (1, 44.0)):
      _evaluated(storage.join(workdirs[where, 'sweep'], 'runs', RUN_NAMES[seed]),
                 {2: {'AtoB': fid, 'BtoA': fid + 1}})
  local_output, remote_output = str(tmp_path / 'report'), f'{bucket}/report'
  pages = [report.write_report([workdirs[where, 'one'], workdirs[where, 'sweep']], output)
           for where, output in (('local', local_output), ('remote', remote_output))]
  assert pages == [f'{local_output}/index.html', f'{remote_output}/index.html']
  names = _same_files(local_output, remote_output)
  assert {'index.html', 'report.md', 'report.json', 'images/curves.png',
          'images/AtoB_run2_0.png'} <= set(names)
  summary = json.loads(storage.read_text(f'{remote_output}/report.json'))
  assert [(r['run'], r['direction'], r['final_fid']) for r in summary['rows']] == [
      ('one', 'AtoB', 50.0), ('one', 'BtoA', 60.0), ('sweep/seed=0', 'AtoB', 40.0),
      ('sweep/seed=0', 'BtoA', 41.0), ('sweep/seed=1', 'AtoB', 44.0),
      ('sweep/seed=1', 'BtoA', 45.0)]

  # Bad workdirs on the store: one line naming the path, as locally.
  with pytest.raises(FileNotFoundError, match=f'^{bucket}/nothing: not a workdir '
                                              r'\(no config.json\)$'):
    report.open_entries([f'{bucket}/nothing'])
  checkpoints.save_config(tiny.get_config(), f'{bucket}/plain')
  with pytest.raises(ValueError, match=f'^{bucket}/plain: no evaluation'):
    report.open_entries([f'{bucket}/plain/'])
  with pytest.raises(OSError, match=f'^--output={MISSING_BUCKET}/report: cannot write to this '
                                    r'folder \(.*\); expected a folder in a bucket'):
    report.write_report([workdirs['remote', 'one']], f'{MISSING_BUCKET}/report')


def test_export_from_a_gcs_workdir_into_gcs(one_step_workdir, bucket, tmp_path):
  """The ONNX files (tile programs too) and their JSON in gs://: the same
  bytes as a local export (the JSON but for the workdir it names), and ONNX
  Runtime runs them."""
  ort = pytest.importorskip('onnxruntime')  # The "export" extra.
  from cyclegan_jax import export  # pylint: disable=import-outside-toplevel
  remote, output = f'{bucket}/w', f'{bucket}/onnx'
  storage.copytree(one_step_workdir, remote)
  local_output = str(tmp_path / 'onnx')
  written = export.export_workdir(remote, output, tiles=True)
  assert written == [f'{output}/{d}{suffix}' for d in ('AtoB', 'BtoA')
                     for suffix in ('.onnx', '.tile.onnx', '.statistics.onnx')]
  export.export_workdir(one_step_workdir, local_output, tiles=True)
  names = _relative_files(local_output)
  assert _relative_files(output) == names and len(names) == 2 * 4
  for name in names:
    if name.endswith('.json'):
      here, there = (json.loads(storage.read_text(f'{f}/{name}')) for f in (local_output, output))
      assert (here.pop('workdir'), there.pop('workdir')) == (one_step_workdir, remote)
      assert here == there
    else:
      assert storage.read_bytes(f'{output}/{name}') == storage.read_bytes(
          f'{local_output}/{name}'), name
  images = np.random.default_rng(0).uniform(-1, 1, (2, 12, 20, 3)).astype(np.float32)
  for direction in ('AtoB', 'BtoA'):
    outputs = [ort.InferenceSession(storage.read_bytes(f'{folder}/{direction}.onnx'),
                                    providers=['CPUExecutionProvider']).run(
                                        None, {export.INPUT_NAME: images})[0]
               for folder in (local_output, output)]
    assert outputs[0].shape == images.shape and np.abs(outputs[0]).mean() > 0.01
    np.testing.assert_array_equal(outputs[1], outputs[0])

  # Bad requests on the store: one line naming the path.
  storage.write_text_atomically(f'{bucket}/file', 'keep me')
  with pytest.raises(FileExistsError, match=f'^--output={bucket}/file is a file'):
    export.export_workdir(remote, f'{bucket}/file')
  assert storage.read_text(f'{bucket}/file') == 'keep me'
  with pytest.raises(FileNotFoundError, match=f'^{bucket}/nowhere/config.json: not found'):
    export.export_workdir(f'{bucket}/nowhere', f'{bucket}/out')
  with pytest.raises(OSError, match=f'^--output={MISSING_BUCKET}/onnx: cannot write to this '
                                    r'folder \(.*\); expected a folder in a bucket this '
                                    'process can write to$'):
    export.export_workdir(remote, f'{MISSING_BUCKET}/onnx')
  with pytest.raises(ValueError, match=r'^s3://b/onnx: expected a local path or gs://'):
    export.export_workdir(remote, 's3://b/onnx')


def test_extract_from_a_gcs_sweep_into_gcs(sweep_workdir, bucket, tmp_path):
  """The run as a workdir in gs://: the arrays, config and run folder a
  local extract writes, restorable from the store."""
  remote, output = f'{bucket}/sweep', f'{bucket}/run1'
  storage.copytree(sweep_workdir, remote)
  local_output = str(tmp_path / 'run1')
  line = extract.extract_run(remote, '1', output)
  assert line.startswith(f'Wrote run 1 ({RUN_NAMES[1]}) at step 2 to {output}; ')
  assert line.endswith(f'--config.seed=1 --workdir={output}')
  extract.extract_run(sweep_workdir, '1', local_output)
  assert configuration.load(output).to_dict() == configuration.load(local_output).to_dict()
  assert configuration.load(output).seed == 1
  (step, there), (_, here) = (checkpoints.load_state(w) for w in (output, local_output))
  assert step == 2
  leaves = [jax.tree.leaves(jax.tree.map(np.asarray, s)) for s in (there, here)]
  assert len(leaves[0]) == len(leaves[1]) and all(
      np.array_equal(a, b) for a, b in zip(*leaves))
  # The run's own folder (samples, TensorBoard events) came along.
  copied = [n for n in _relative_files(output) if not n.startswith('checkpoints/')]
  assert copied == [n for n in _relative_files(local_output) if not n.startswith('checkpoints/')]
  assert 'samples/step_00000002.png' in copied
  assert any(n.startswith('events.out.tfevents.') for n in copied)
  assert curves.loss_history(output) == curves.loss_history(local_output)

  with pytest.raises(ValueError, match=f'^--output={output}: exists and is not an empty folder'):
    extract.extract_run(remote, '1', output)
  with pytest.raises(ValueError, match=f'^--mode=extract: {output} holds one run, not a sweep'):
    extract.extract_run(output, '0', f'{bucket}/again')
  with pytest.raises(OSError, match=f'^{MISSING_BUCKET}/run1: cannot write to this workdir'):
    extract.extract_run(remote, '1', f'{MISSING_BUCKET}/run1')


def test_import_torch_into_a_gcs_workdir(bucket, tmp_path):
  """Official generator files in gs:// into a gs:// workdir: the checkpoint
  a local import writes."""
  torch = pytest.importorskip('torch')
  from cyclegan_jax import torch_import  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import torch_reference  # pylint: disable=import-outside-toplevel
  torch.manual_seed(5)
  files = {}
  for name in ('G_A', 'G_B'):
    files[name] = str(tmp_path / f'{name}.pth')
    torch.save(torch_reference.ResnetGenerator(8, 2).state_dict(), files[name])
    storage.copy(files[name], f'{bucket}/{name}.pth')
  config = tiny.get_config()
  remote, local = f'{bucket}/w', str(tmp_path / 'w')
  torch_import.import_torch_checkpoints(config, remote, f'{bucket}/G_A.pth', f'{bucket}/G_B.pth')
  torch_import.import_torch_checkpoints(config, local, files['G_A'], files['G_B'])
  assert json.loads(storage.read_text(f'{remote}/torch_import.json')) == {
      'gen_ab': f'{bucket}/G_A.pth', 'gen_ba': f'{bucket}/G_B.pth'}
  (step, there), (_, here) = (checkpoints.load_params(w, ('gen_ab', 'gen_ba'))
                              for w in (remote, local))
  assert step == 0
  jax.tree.map(np.testing.assert_array_equal, there, here)
  assert configuration.load(remote).to_dict() == configuration.load(local).to_dict()

  with pytest.raises(FileExistsError, match=f'^{remote} already holds checkpoints'):
    torch_import.import_torch_checkpoints(config, remote, f'{bucket}/G_A.pth')
  with pytest.raises(FileNotFoundError, match=f'^{bucket}/nowhere.pth: no such file'):
    torch_import.import_torch_checkpoints(config, f'{bucket}/new', f'{bucket}/nowhere.pth')
  assert not storage.exists(f'{bucket}/new')


@pytest.mark.slow
def test_test_mode_from_the_command_line_on_a_gcs_workdir(one_step_workdir, bucket):
  """main.py --mode=test on a gs:// workdir (the emulator's environment
  inherited), and its one-line error for a gs:// path that holds no workdir."""
  remote = f'{bucket}/w'
  storage.copytree(one_step_workdir, remote)
  result = subprocess.run([sys.executable, 'main.py', '--mode=test', f'--workdir={remote}',
                           '--num_test=1'], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'Wrote {remote}/results/1/index.html' in result.stdout
  assert storage.listdir(f'{remote}/results/1/images') == sorted(
      f'test{d}_0000_{kind}.png' for d in 'AB' for kind in ('real', 'fake', 'rec'))
  bad = subprocess.run([sys.executable, 'main.py', '--mode=report', f'--workdirs={bucket}/none',
                        f'--output={bucket}/report'], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
  assert bad.returncode == 1
  assert bad.stderr.strip().splitlines()[-1] == (
      f'error: {bucket}/none: not a workdir (no config.json)')
