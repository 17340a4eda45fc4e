import numpy as np

from configs import default, tiny
from cyclegan_jax import state as state_lib


def test_schedule_from_epochs_constant_then_linear_to_zero():
  train = default.get_config().train  # 100 + 100 epochs.
  schedule = state_lib.learning_rate_schedule(train, steps_per_epoch=10)
  assert state_lib.schedule_steps(train, 10) == (1000, 1000)
  assert np.isclose(schedule(0), 2e-4)
  assert np.isclose(schedule(999), 2e-4)
  assert np.isclose(schedule(1000), 2e-4)  # The turn.
  assert np.isclose(schedule(1500), 1e-4)
  assert np.isclose(schedule(1999), 2e-4 / 1000)
  assert np.isclose(schedule(2000), 0.0)  # The end.


def test_schedule_from_num_steps_halves():
  train = default.get_config().train
  train.num_steps = 11
  assert state_lib.schedule_steps(train, steps_per_epoch=1234) == (5, 6)
  schedule = state_lib.learning_rate_schedule(train, 1234)
  assert np.isclose(schedule(5), 2e-4) and np.isclose(schedule(8), 1e-4)
  assert np.isclose(schedule(11), 0.0)


def test_state_holds_four_networks_two_pools_per_device():
  config = tiny.get_config()
  state = state_lib.create_state(config, (32, 32, 3), num_devices=2, steps_per_epoch=1)
  assert int(state.step) == 0
  assert state.pool_fake_a.images.shape == (2, 50, 32, 32, 3)
  assert state.pool_fake_b.num_stored.shape == (2,)
  # Different initial weights for the two generators.
  assert not np.allclose(state.gen_ab.params['Conv_0']['kernel'],
                         state.gen_ba.params['Conv_0']['kernel'])
