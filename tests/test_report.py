"""--mode=report: several workdirs' FID/KID side by side, with their protocols,
config differences, seed groups, curves and translations; the page checked
in a browser."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from configs import quickstart
from configs import quickstart_cut
from configs import quickstart_fastcut
from configs import tiny
from configs import tiny_cut
from configs import tiny_unsb
from cyclegan_jax import checkpoints
from cyclegan_jax import inception
from cyclegan_jax import inception_weights
from cyclegan_jax import report
from cyclegan_jax import results_page
from cyclegan_jax import train
from tests import browser
from tests.test_results_page import check_rendered

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTOCOL = {'fid_mode': 'legacy', 'test_data': {'source': '/data', 'split': 'test', 'size': 32,
                                                'num_images': 0},
            'inception_weights_sha256': 'ab' * 32, 'kid_subsets': 100, 'kid_subset_size': 1000}


def _evaluated(folder, scores, protocol=PROTOCOL):
  """eval/step_*.json and latest.json as evaluation writes them:
  scores = {step: {direction: fid}} (KID = FID / 1000)."""
  os.makedirs(os.path.join(folder, 'eval'), exist_ok=True)
  for step, per_direction in sorted(scores.items()):
    result = {'step': step, 'protocol': protocol, **{
        d: {'fid': fid, 'kid_mean': fid / 1000, 'kid_std': 0.0, 'num_fake': 4, 'num_real': 4}
        for d, fid in per_direction.items()}}
    for name in (f'step_{step:08d}.json', 'latest.json'):
      with open(os.path.join(folder, 'eval', name), 'w') as f:
        json.dump(result, f)


def _workdir(path, config, scores=None, protocol=PROTOCOL):
  os.makedirs(path)
  checkpoints.save_config(config, str(path))
  if scores:
    _evaluated(str(path), scores, protocol)
  return str(path)


def test_final_best_seed_groups_protocols_and_differences(tmp_path):
  base = tiny.get_config()
  base.data.image_dir = '/data'
  seed1 = tiny.get_config()
  seed1.data.image_dir = '/data'
  seed1.seed = 1
  other_lambda = tiny.get_config()
  other_lambda.data.image_dir = '/data'
  other_lambda.train.lambda_cycle = 5.0
  other_lambda.data.cache_dir = '/elsewhere'  # Where files are: not a difference.
  clean = dict(PROTOCOL, fid_mode='clean')
  workdirs = [
      _workdir(tmp_path / 's0', base, {10: {'AtoB': 50.0, 'BtoA': 70.0},
                                       20: {'AtoB': 40.0, 'BtoA': 80.0}}),
      _workdir(tmp_path / 's1', seed1, {10: {'AtoB': 60.0, 'BtoA': 60.0},
                                        20: {'AtoB': 44.0, 'BtoA': 66.0}}),
      _workdir(tmp_path / 'l5', other_lambda, {20: {'AtoB': 30.0, 'BtoA': 30.0}}, clean)]
  entries = report.open_entries(workdirs)
  assert [e.label for e in entries] == ['s0', 's1', 'l5']
  assert report.config_differences(entries) == [
      {'seed': 0, 'train.lambda_cycle': 10.0}, {'seed': 1, 'train.lambda_cycle': 10.0},
      {'seed': 0, 'train.lambda_cycle': 5.0}]

  summary = report.summarise(entries)
  s0_ab = summary['rows'][0]
  assert (s0_ab['run'], s0_ab['family'], s0_ab['direction'], s0_ab['protocol']) == (
      's0', 'cyclegan', 'AtoB', 'P1')
  assert (s0_ab['final_fid'], s0_ab['final_step'], s0_ab['best_fid'], s0_ab['best_fid_step'],
          s0_ab['best_kid'], s0_ab['best_kid_step']) == (40.0, 20, 40.0, 20, 0.04, 20)
  s0_ba = summary['rows'][1]
  assert (s0_ba['final_fid'], s0_ba['best_fid'], s0_ba['best_fid_step']) == (80.0, 70.0, 10)
  assert summary['rows'][-1]['protocol'] == 'P2'
  # Seeds 0 and 1 (one protocol, alike but for the seed): mean ± sample std.
  groups = {g['direction']: g for g in summary['seed_groups']}
  assert sorted(groups) == ['AtoB', 'BtoA'] and groups['AtoB']['runs'] == ['s0', 's1']
  assert groups['AtoB']['final_fid'] == f'42 ± {np.std([40, 44], ddof=1):.2g}'
  assert groups['BtoA']['best_fid'] == f'{np.mean([70, 60]):.4g} ± {np.std([70, 60], ddof=1):.2g}'

  text = report.markdown(summary)
  assert '| s0 | cyclegan | AtoB | 40 (20) | 40 (20) | 0.04 | 0.04 (20) | P1 |' in text
  assert '| field | s0 | s1 | l5 |' in text and '| seed | 0 | 1 | 0 |' in text
  assert '| train.lambda_cycle | 10.0 | 10.0 | 5.0 |' in text
  assert '| s0, s1 | cyclegan | AtoB | 42 ± 2.8 |' in text
  assert '- P1: legacy FID; /data test split, 32 px, all images per domain' in text
  assert '- P2: clean FID;' in text
  assert 'These scores come from 2 different protocols: compare scores of one protocol only.' \
      in text
  assert 'jax ' in text.splitlines()[-1]  # The software that wrote it.


def test_differences_leave_out_fields_that_no_compared_family_reads(tmp_path):
  """CUT never reads CycleGAN's pool or cycle weight: a CUT run that differs
  from another only there differs in nothing shown. With a CycleGAN run
  beside it, CycleGAN's fields count, and the CUT columns say "—"."""
  scores = {2: {'AtoB': 50.0}}
  cut, cut_pool, cyclegan = tiny_cut.get_config(), tiny_cut.get_config(), tiny.get_config()
  cut_pool.train.pool_size = 10  # Unread by CUT...
  cut_pool.model.lambda_cycle = 1.0  # ...and a stray field of no family.
  cut_pool.train.lambda_nce = 2.0  # Read by CUT.
  cut_pool.data.load_size = 40  # General: read by every family.
  cyclegan.train.pool_size = 10
  workdirs = [_workdir(tmp_path / name, config, scores) for name, config in
              (('cut', cut), ('cut_pool', cut_pool), ('cyclegan', cyclegan))]
  entries = report.open_entries(workdirs[:2])
  assert report.config_differences(entries) == [
      {'data.load_size': 36, 'model.lambda_cycle': None, 'train.lambda_nce': 1.0},
      {'data.load_size': 40, 'model.lambda_cycle': 1.0, 'train.lambda_nce': 2.0}]

  entries = report.open_entries([workdirs[0], workdirs[2]])
  cut_diff, cyclegan_diff = report.config_differences(entries)
  assert 'train.pool_size' not in cut_diff and cyclegan_diff['train.pool_size'] == 10
  assert cut_diff['model.kind'] == 'cut' and cut_diff['train.nce_layers'] == (0, 4, 8, 12, 13)
  assert 'train.nce_layers' not in cyclegan_diff  # CUT's: "—" in CycleGAN's column.
  text = report.markdown(report.summarise(entries))
  assert '| train.pool_size | — | 10 |' in text
  assert '| train.nce_layers | (0, 4, 8, 12, 13) | — |' in text
  assert "Config fields that differ (—: not read by that run's family):" in text
  page = report.page(report.summarise(entries), {}, 'r')
  assert ('<tr><td>train.pool_size</td><td class="num">—</td><td class="num">10</td></tr>'
          in page)  # "—" aligned with the numbers of its row.

  # UNSB reads CUT's PatchNCE fields (its ALSO_READS), not FastCUT's flip.
  unsb, unsb_other = tiny_unsb.get_config(), tiny_unsb.get_config()
  unsb_other.train.num_patches = 64
  unsb_other.train.flip_equivariance = True
  entries = report.open_entries([_workdir(tmp_path / 'u1', unsb, scores),
                                 _workdir(tmp_path / 'u2', unsb_other, scores)])
  assert report.config_differences(entries) == [{'train.num_patches': 256},
                                                {'train.num_patches': 64}]


def test_software_each_workdir_was_trained_with(tmp_path, monkeypatch):
  """versions.json: a record per start that changed the software, shown per
  workdir; a workdir from before it: "not recorded"."""
  scores = {2: {'AtoB': 50.0}}
  recorded, older = (_workdir(tmp_path / name, tiny.get_config(), scores)
                     for name in ('recorded', 'older'))
  now = report.versions()
  assert set(now) == {'python', 'jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint',
                      'cyclegan_jax', 'git_commit'}
  report.record_versions(recorded, 0)
  report.record_versions(recorded, 2)  # A resume with the same software: no new record.
  assert report.recorded_versions(recorded) == [{'from_step': 0, **now}]
  summary = report.summarise(report.open_entries([recorded, older]))
  assert summary['trained_with'] == {'recorded': [{'from_step': 0, **now}], 'older': None}
  text = report.markdown(summary)
  commit = now['git_commit'] and now['git_commit'][:12]
  assert (f'| recorded | {now["python"]} | {now["jax"]} | {now["jaxlib"]} | {now["flax"]} | '
          f'{now["optax"]} | {now["orbax-checkpoint"]} | {now["cyclegan_jax"]} | '
          f'{commit or "—"}') in text
  assert '| older | not recorded |' in text
  page = report.page(summary, {}, 'r')
  assert (f'<td>older</td><td colspan="{len(report.SOFTWARE_HEADER)}">not recorded</td>'
          in page)
  # Resumed with another jax: a second record, and the table says from which step.
  monkeypatch.setattr(report, 'versions', lambda: dict(now, jax='9.9.9'))
  report.record_versions(recorded, 2)
  assert [r['from_step'] for r in report.recorded_versions(recorded)] == [0, 2]
  text = report.markdown(report.summarise(report.open_entries([recorded])))
  assert '| workdir | from step | python | jax |' in text
  assert f'| recorded | 2 | {now["python"]} | 9.9.9 |' in text
  (tmp_path / 'older' / 'versions.json').write_text('{not json')
  assert report.recorded_versions(older) is None  # Unreadable: "not recorded", no error.


def test_page_is_styled_and_aligned(tmp_path):
  """The shared stylesheet; numbers right-aligned; small images 4x."""
  workdir = _workdir(tmp_path / 'w', tiny.get_config(), {10: {'AtoB': 50.0}})
  summary = report.summarise(report.open_entries([workdir]))
  page = report.page(summary, {'AtoB': [('test input', [('AtoB_input1_0.png', (32, 32, 3))])]},
                     'Report: w')
  assert f'<style>\n{results_page.STYLE}</style>' in page
  assert '<th class="num">final FID (step)</th>' in page and '<th>run</th>' in page
  assert '<td>w</td><td>cyclegan</td><td>AtoB</td><td class="num">50 (10)</td>' in page
  assert ('<td class="image"><img src="images/AtoB_input1_0.png" alt="test input" '
          'width="128" height="128"></td>') in page
  assert '|---|---|---|---:|---:|---:|---:|---|' in report.markdown(summary)


def test_report_of_trained_runs_shows_their_software_and_reads_in_a_browser(
    one_step_workdir, tmp_path):
  """A one-step run records its software at training; the report shows it,
  says "not recorded" for a workdir without it, and reads in Chromium: small
  images shown >= 128 px, sharp; sans-serif; ruled tables."""
  recorded, older = str(tmp_path / 'recorded'), str(tmp_path / 'older')
  for workdir in (recorded, older):
    shutil.copytree(one_step_workdir, workdir)
    _evaluated(workdir, {1: {'AtoB': 50.0, 'BtoA': 60.0}})
  os.remove(os.path.join(older, 'versions.json'))
  trained_with, = report.recorded_versions(recorded)
  assert trained_with == {'from_step': 0, **report.versions()}
  path = report.write_report([recorded, older], str(tmp_path / 'report'))
  summary = json.loads((tmp_path / 'report' / 'report.json').read_text())
  assert summary['trained_with'] == {'recorded': [trained_with], 'older': None}
  page = open(path, encoding='utf-8').read()
  widths = re.findall(r'<img src="images/\w+_(?:input|run)\d_\d.png" [^>]*width="(\d+)"', page)
  assert widths == ['128'] * (2 * 2 * 3)  # 2 directions, 2 test images, input and 2 runs.
  assert f'<td>{trained_with["jax"]}</td>' in page and '>not recorded</td>' in page
  check_rendered(path, min_images=1 + 2 * 2 * 3)


def test_a_sweep_is_reported_run_by_run(tmp_path):
  config = tiny.get_config()
  config.sweep.seed = (0, 1)
  workdir = _workdir(tmp_path / 'sweep', config)
  for seed, fid in ((0, 50.0), (1, 54.0)):
    _evaluated(os.path.join(workdir, 'runs', f'seed={seed}'), {4: {'AtoB': fid}})
  entries = report.open_entries([workdir])
  assert [(e.label, e.run, e.config.seed) for e in entries] == [('sweep/seed=0', '0', 0),
                                                               ('sweep/seed=1', '1', 1)]
  group, = report.summarise(entries)['seed_groups']
  assert group['runs'] == ['sweep/seed=0', 'sweep/seed=1'] and group['final_fid'] == '52 ± 2.8'


def test_bad_workdirs_are_named_in_one_line(tmp_path):
  with pytest.raises(FileNotFoundError, match=f'^{tmp_path}/nothing: not a workdir '
                                              r'\(no config.json\)$'):
    report.open_entries([str(tmp_path / 'nothing')])
  unevaluated = _workdir(tmp_path / 'plain', tiny.get_config())
  with pytest.raises(ValueError, match=f'^{unevaluated}: no evaluation \\(eval/step_\\*.json\\): '
                                       'score it with python main.py --mode=evaluate '
                                       f'--workdir={unevaluated}, or train with '
                                       '--config.eval.every_steps$'):
    report.open_entries([unevaluated])
  with pytest.raises(ValueError, match='^--workdirs: expected one or more workdirs'):
    report.open_entries([])


@pytest.fixture(scope='module')
def three_families(tmp_path_factory):
  """The quick start's three families (configs/quickstart.py,
  quickstart_cut.py, quickstart_fastcut.py) on its day -> dusk data, 2 steps
  each, scored at the end on 3 test images per domain (random Inception
  weights: the numbers mean nothing; each FID's 2048 x 2048 sqrtm takes 13 s
  or more, so one evaluation each)."""
  root = tmp_path_factory.mktemp('families')
  weights = str(root / 'inception.npz')
  inception_weights.save(weights, inception.init_variables(0))
  workdirs = []
  for name, module in (('cyclegan', quickstart), ('cut', quickstart_cut),
                       ('fastcut', quickstart_fastcut)):
    config = module.get_config()
    config.data.cache_dir = str(root / 'cache')
    config.train.num_steps = 2
    config.eval.every_steps = 2
    config.eval.inception_weights = weights
    config.eval.num_images = 3
    config.eval.kid_subset_size = 2
    config.eval.kid_subsets = 5
    workdir = str(root / name)
    train.train_and_evaluate(config, workdir)
    workdirs.append(workdir)
  return workdirs


@pytest.mark.slow
def test_report_of_three_families_from_the_command_line(three_families, tmp_path):
  output = tmp_path / 'report'
  result = subprocess.run([sys.executable, 'main.py', '--mode=report',
                           f'--workdirs={",".join(three_families)}', f'--output={output}'],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'Wrote {output}/index.html' in result.stdout
  summary = json.loads((output / 'report.json').read_text())
  assert [(r['run'], r['family'], r['direction'], r['final_step'])
          for r in summary['rows']] == [('cyclegan', 'cyclegan', 'AtoB', 2),
                                        ('cyclegan', 'cyclegan', 'BtoA', 2),
                                        ('cut', 'cut', 'AtoB', 2), ('fastcut', 'cut', 'AtoB', 2)]
  for row in summary['rows']:  # The scores of each workdir's own evaluations.
    stored = json.loads(open(os.path.join(os.path.dirname(three_families[0]), row['run'],
                                          'eval', 'latest.json')).read())
    assert row['final_fid'] == stored[row['direction']]['fid']
  assert list(summary['protocols']) == ['P1']  # One protocol: comparable.
  assert summary['rows'][3]['differences']['model.kind'] == 'cut'
  assert summary['rows'][3]['differences']['train.flip_equivariance'] is True
  assert summary['rows'][2]['differences']['train.flip_equivariance'] is False
  markdown = (output / 'report.md').read_text()
  assert markdown.startswith('# Report: cyclegan, cut, fastcut\n')
  page = (output / 'index.html').read_text()
  assert '<img src="images/curves.png"' in page
  # Test inputs once per direction, then each workdir's translations of them.
  for name in ('AtoB_input1_0.png', 'AtoB_run0_3.png', 'AtoB_run2_0.png', 'BtoA_run0_0.png'):
    assert f'src="images/{name}"' in page
    assert Image.open(output / 'images' / name).size == (64, 64)
  assert 'AtoB_input2_0.png' not in page  # The same test images for all three.

  seen = browser.check_page(str(output / 'index.html'), min_images=1 + 4 * 5)
  assert seen['title'] == 'Report: cyclegan, cut, fastcut'


@pytest.mark.slow
def test_results_page_with_its_curves_renders_in_a_browser(three_families):
  """The results page of an evaluated workdir (--mode=test), in a browser."""
  result = subprocess.run([sys.executable, 'main.py', '--mode=test',
                           f'--workdir={three_families[0]}', '--num_test=2'],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  page = os.path.join(three_families[0], 'results', '2', 'index.html')
  seen = browser.check_page(page, min_images=2 * 2 * 3 + 1)
  assert ('images/curves.png', True) in seen['images']


def test_command_line_errors_are_one_line(tmp_path):
  result = subprocess.run([sys.executable, 'main.py', '--mode=report',
                           f'--output={tmp_path}'], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      'error: --mode=report needs --workdirs=W1,W2,... and --output=DIR')
  result = subprocess.run([sys.executable, 'main.py', '--mode=test'], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode != 0 and '--workdir is required' in result.stderr
