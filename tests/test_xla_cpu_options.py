"""The XLA:CPU option that main.py and the benchmark set by default."""

import importlib.metadata

from cyclegan_jax import xla_cpu_options

FLAG = xla_cpu_options.YNN_FUSION_FLAG
OURS = f'{FLAG}=individual_dot,reduce'


def _measured_jaxlib() -> bool:
  return importlib.metadata.version('jaxlib').startswith(xla_cpu_options.MEASURED_JAXLIB)


def test_added_to_the_users_flags_on_a_measured_jaxlib():
  environ = {'XLA_FLAGS': '--xla_force_host_platform_device_count=4'}
  added = xla_cpu_options.set_defaults(environ)
  assert added == _measured_jaxlib()
  expected = f'--xla_force_host_platform_device_count=4 {OURS}' if added else (
      '--xla_force_host_platform_device_count=4')
  assert environ['XLA_FLAGS'] == expected
  environ = {}
  xla_cpu_options.set_defaults(environ)
  assert environ.get('XLA_FLAGS') == (OURS if added else None)


def test_the_users_own_setting_of_the_flag_wins():
  environ = {'XLA_FLAGS': f'{FLAG}=individual_convolution'}
  assert not xla_cpu_options.set_defaults(environ)
  assert environ['XLA_FLAGS'] == f'{FLAG}=individual_convolution'


def test_an_unmeasured_jaxlib_gets_nothing(monkeypatch):
  # XLA aborts on a flag it does not know: never add it to an unknown jaxlib.
  monkeypatch.setattr(xla_cpu_options, 'MEASURED_JAXLIB', ('99.',))
  environ = {}
  assert not xla_cpu_options.set_defaults(environ)
  assert environ == {}
