import pytest

from cyclegan_jax import xla_cpu_options
from tests import synthetic

# The XLA:CPU option main.py sets, here too, before JAX starts its backend:
# tests that run main.py in a subprocess compare its results with runs in
# this process.
xla_cpu_options.set_defaults()


@pytest.fixture(scope='session')
def image_folder(tmp_path_factory):
  """A small unpaired dataset laid out like the official ones."""
  return synthetic.make_unpaired_folder(str(tmp_path_factory.mktemp('data')), n_train=12,
                                        n_test=4)
