"""Sweeps: several runs of one config (seeds, scalar hyperparameters) trained
side by side in one program, each the run it would be alone (docs/sweeps.md).

`config.sweep` mirrors the sweepable fields, each a tuple of values (empty:
not swept). The runs are the product of the swept fields, in the order
`sweepable()` lists them (seed first), the last varying fastest:
--config.sweep.seed='(0,1)' --config.sweep.train.lambda_cycle='(5.0,10.0)' gives
0: seed=0,lambda_cycle=5.0  1: seed=0,lambda_cycle=10.0  2: seed=1,lambda_cycle=5.0 ...

Run r's config (`run_config`) is the config with the sweep emptied and its
values set: what `main.py` would train alone. Inside the train step the swept
values are traced arrays (`with_values`), never constants of the program.
"""

import dataclasses
import itertools
import math

import ml_collections

from cyclegan_jax import config_fields
from cyclegan_jax import families

# Fields every family's step reads that change no shape and no program. With
# them, each family's SWEEPABLE; its GATED ones turn a loss term off at 0.
COMMON_SWEEPABLE = ('seed', 'train.lr', 'train.beta1', 'train.beta2', 'train.lambda_gp')


def sweepable() -> tuple[str, ...]:
  """Every field a sweep may vary, in the order runs are formed."""
  names = list(COMMON_SWEEPABLE)
  for family in families.FAMILIES.values():
    names += [name for name in family.SWEEPABLE if name not in names]
  return tuple(names)


def gated() -> tuple[str, ...]:
  return tuple(name for family in families.FAMILIES.values() for name in family.GATED)


def add_config_fields(config: ml_collections.ConfigDict) -> None:
  """config.sweep: an empty tuple for every sweepable field (after the
  families have added theirs)."""
  config.sweep = ml_collections.ConfigDict()
  for name in sweepable():
    node = config.sweep
    *groups, last = name.split('.')
    for group in groups:
      if group not in node:
        node[group] = ml_collections.ConfigDict()
      node = node[group]
    node[last] = ()


@dataclasses.dataclass(frozen=True)
class Run:
  index: int
  name: str  # 'seed=1,lambda_cycle=5.0': the swept fields' last names and values.
  values: dict  # {'seed': 1, 'train.lambda_cycle': 5.0}

  @property
  def folder(self) -> str:
    """Its outputs' folder inside the sweep's workdir."""
    return f'runs/{self.name}'


def swept(config) -> dict[str, tuple]:
  """{field: its values} of the swept fields, in sweepable() order."""
  if 'sweep' not in config:
    return {}
  values = {name: tuple(config_fields.field(config.sweep, name)) for name in sweepable()}
  return {name: v for name, v in values.items() if v}


def is_sweep(config) -> bool:
  return bool(swept(config))


def _short_names(names) -> dict[str, str]:
  """Each field's last part, or its whole name where two share a last part."""
  last = [name.split('.')[-1] for name in names]
  return {name: (short if last.count(short) == 1 else name) for name, short in zip(names, last)}


def runs(config) -> list[Run]:
  """The runs of a sweep (a config without one: []), in their order."""
  fields = swept(config)
  if not fields:
    return []
  short = _short_names(fields)
  return [Run(i, ','.join(f'{short[name]}={value}' for name, value in zip(fields, combo)),
              dict(zip(fields, combo)))
          for i, combo in enumerate(itertools.product(*fields.values()))]


def run_config(config, run: Run) -> ml_collections.ConfigDict:
  """The config run `run` trains: the sweep emptied, its values set."""
  single = ml_collections.ConfigDict(config.to_dict())
  for name in swept(config):
    _set(single.sweep, name, ())
  for name, value in run.values.items():
    if isinstance(config_fields.field(single, name), float):
      value = float(value)  # An int given for a float field.
    _set(single, name, value)
  return single


def with_values(config, values: dict) -> ml_collections.ConfigDict:
  """A copy of `config` whose fields `values` names hold `values` (traced
  arrays inside the train step): the config one run's step reads."""
  copy = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
  for name, value in values.items():
    _set(copy, name, value)
  return copy


def _set(config, name: str, value) -> None:
  *groups, last = name.split('.')
  for group in groups:
    config = config[group]
  with config.ignore_type():
    config[last] = value


def traced_fields(config) -> tuple[str, ...]:
  """The swept fields the train step reads as arrays: all but the seed (which
  only chooses initial weights, keys and data)."""
  return tuple(name for name in swept(config) if name != 'seed')


def find(config, name_or_index: str) -> Run:
  """The run `--run` names, by name or index; a ValueError listing the runs."""
  all_runs = runs(config)
  for run in all_runs:
    if name_or_index in (run.name, str(run.index)):
      return run
  listing = ', '.join(f'{run.index}: {run.name}' for run in all_runs)
  raise ValueError(f'--run={name_or_index}: no such run; this sweep has {listing}')


def check(config) -> None:
  """One-line ValueErrors naming the culprit: values of the wrong type, a
  gated weight that mixes 0 with other values."""
  for name, values in swept(config).items():
    where = f'config.sweep.{name}'
    default = config_fields.field(config, name)
    for value in values:
      if isinstance(default, bool) or isinstance(value, bool):
        ok = False
      elif isinstance(default, int):
        ok = isinstance(value, int)
      else:
        ok = isinstance(value, (int, float)) and math.isfinite(value)
      if not ok:
        kind = 'integers' if isinstance(default, int) else 'numbers'
        raise ValueError(f'{where}={values!r}: expected a tuple of {kind} (config.{name} is '
                         f'{default!r}), got {value!r}')
    if len(set(values)) != len(values):
      raise ValueError(f'{where}={values!r}: a value is given twice; each run needs its own')
    if name in gated() and 0 in values and any(v != 0 for v in values):
      raise ValueError(f'{where}={values!r}: 0 turns the loss term off, which makes another '
                       'program than the other values; sweep 0 and the others separately')


def mesh_shape(num_runs: int, num_devices: int) -> tuple[int, int]:
  """(runs axis, data axis) of the sweep's mesh: num_runs / num_devices runs
  on each device, or num_devices / num_runs devices of data parallelism per
  run; a ValueError when neither divides."""
  if num_runs >= num_devices and num_runs % num_devices == 0:
    return num_devices, 1
  if num_runs < num_devices and num_devices % num_runs == 0:
    return num_runs, num_devices // num_runs
  raise ValueError(f'config.sweep: {num_runs} runs on {num_devices} devices; expected a '
                   f'number of runs that is a multiple or a divisor of {num_devices}')


SUMMARY_FILE = 'sweep.json'


def _mean_std(values: list) -> dict:
  """{'mean', 'std' (sample standard deviation; 0 for one value), 'n'}."""
  n = len(values)
  mean = sum(values) / n
  std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
  return {'mean': mean, 'std': std, 'n': n}


def summary(per_run: list[dict]) -> dict:
  """sweep.json: `per_run` (each: index, name, values, folder, step, losses,
  final: the last eval's scores or None, best: {direction: {step, fid}} or
  None), and per group of runs that differ only in their seed the mean ± std
  of the final FID and KID and of the best FID, per direction."""
  groups = {}
  for run in per_run:
    key = tuple((k, v) for k, v in run['values'].items() if k != 'seed')
    groups.setdefault(key, []).append(run)
  summaries = []
  for key, members in groups.items():
    group = {'values': dict(key), 'runs': [run['name'] for run in members]}
    finals = [run['final'] for run in members if run['final']]
    bests = [run['best'] for run in members if run['best']]
    if finals and len(finals) == len(members):
      directions = [d for d, v in finals[0].items() if isinstance(v, dict) and 'fid' in v]
      group['final_fid'] = {d: _mean_std([f[d]['fid'] for f in finals]) for d in directions}
      group['final_kid'] = {d: _mean_std([f[d]['kid_mean'] for f in finals])
                            for d in directions}
    if bests and len(bests) == len(members):
      group['best_fid'] = {d: _mean_std([b[d]['fid'] for b in bests]) for d in bests[0]}
    summaries.append(group)
  return {'runs': per_run, 'groups': summaries}


def summary_table(summary: dict) -> list[str]:
  """The log's table of sweep.json: one line per run, then per group."""
  lines = []
  for run in summary['runs']:
    scores = ''
    if run['final']:
      scores = ', '.join(f'{d} FID {s["fid"]:.4f} (best {run["best"][d]["fid"]:.4f} at step '
                         f'{run["best"][d]["step"]})'
                         for d, s in run['final'].items() if isinstance(s, dict) and 'fid' in s)
    else:
      scores = ', '.join(f'{k}={v:.4g}' for k, v in sorted(run['losses'].items())
                         if k.endswith('total') or k.endswith('loss'))
    lines.append(f'run {run["index"]} {run["name"]} at step {run["step"]}: {scores}')
  for group in summary['groups']:
    if len(group['runs']) < 2 or 'final_fid' not in group:
      continue
    label = ','.join(f'{k.split(".")[-1]}={v}' for k, v in group['values'].items()) or 'all'
    stats = ', '.join(
        f'{d} FID {m["mean"]:.4f} ± {m["std"]:.4f}' for d, m in group['final_fid'].items())
    lines.append(f'{label} over {len(group["runs"])} seeds: final {stats}')
  return lines
