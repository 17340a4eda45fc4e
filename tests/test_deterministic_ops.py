"""config.deterministic: XLA's deterministic GPU ops set before JAX starts."""

from cyclegan_jax import deterministic_ops


def test_the_flag_is_added_when_asked_and_the_users_own_wins():
  environ = {'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  assert deterministic_ops.set_flag(True, environ)
  assert environ['XLA_FLAGS'] == ('--xla_force_host_platform_device_count=2 '
                                  '--xla_gpu_deterministic_ops=true')
  assert not deterministic_ops.set_flag(True, environ)  # Once.
  assert environ['XLA_FLAGS'].count('deterministic') == 1
  mine = {'XLA_FLAGS': '--xla_gpu_deterministic_ops=false'}
  assert not deterministic_ops.set_flag(True, mine)
  assert mine['XLA_FLAGS'] == '--xla_gpu_deterministic_ops=false'
  empty = {}
  assert not deterministic_ops.set_flag(False, empty) and 'XLA_FLAGS' not in empty
  assert deterministic_ops.set_flag(True, empty)
  assert empty['XLA_FLAGS'] == '--xla_gpu_deterministic_ops=true'


def test_a_gpu_started_without_the_flag_is_named():
  without = {'XLA_FLAGS': ''}
  line = deterministic_ops.warning(True, 'gpu', without)
  assert line.startswith('config.deterministic=True, but JAX started on this GPU without '
                         'XLA_FLAGS=--xla_gpu_deterministic_ops=true')
  assert deterministic_ops.warning(False, 'gpu', without) is None
  assert deterministic_ops.warning(True, 'cpu', without) is None  # Deterministic anyway.
  assert deterministic_ops.warning(True, 'tpu', without) is None
  assert deterministic_ops.warning(
      True, 'gpu', {'XLA_FLAGS': '--xla_gpu_deterministic_ops=true'}) is None
