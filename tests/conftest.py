import pytest

from tests import synthetic


@pytest.fixture(scope='session')
def image_folder(tmp_path_factory):
  """A small unpaired dataset laid out like the official ones."""
  return synthetic.make_unpaired_folder(str(tmp_path_factory.mktemp('data')), n_train=12,
                                        n_test=4)
