import atexit
import os
import shutil
import tempfile

import pytest

from tests import synthetic
from tests import xla_flags
# The local GCS emulator and a fresh bucket on it, for the tests of gs:// paths.
from tests.gcs import bucket, gcs_server  # pylint: disable=unused-import

# The XLA:CPU option main.py sets, here too, before JAX starts its backend
# (tests that run main.py in a subprocess compare its results with runs in
# this process), and LLVM loop unrolling off, which makes compiling faster
# (tests/xla_flags.py says why and by how much).
xla_flags.set_defaults()

# One persistent compilation cache for this test session and every process it
# starts (they inherit the environment): the suite compiles the same tiny
# train step in dozens of processes, and each compile after the first is read
# from disk (a 2-step tiny run through main.py: 39 s -> 15 s). pytest-xdist's
# workers inherit it from the main process, so they share it too (a worker
# that reads an entry another is still writing gets JAX's warning "Error
# reading persistent compilation cache entry" and compiles it itself). A fresh folder
# each session, so every program is still compiled once per run; a cached
# executable is the one XLA compiled for the same program and flags (a run
# from the cache ended bit-identical to one without it).
_CACHE = tempfile.mkdtemp(prefix='cyclegan_jax_test_jax_cache_')
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', _CACHE)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')


@pytest.fixture(scope='session')
def image_folder(tmp_path_factory):
  """A small unpaired dataset laid out like the official ones."""
  return synthetic.make_unpaired_folder(str(tmp_path_factory.mktemp('data')), n_train=12,
                                        n_test=4)


@pytest.fixture(scope='session')
def one_step_workdir(tmp_path_factory):
  """A one-step tiny CycleGAN run: enough for a checkpoint to translate or
  export (read only: tests must not change it)."""
  from configs import tiny  # pylint: disable=import-outside-toplevel
  from cyclegan_jax import train  # pylint: disable=import-outside-toplevel
  config = tiny.get_config()
  config.data.image_dir = synthetic.make_unpaired_folder(
      str(tmp_path_factory.mktemp('one_step_data')), n_train=4, n_test=2)
  config.train.num_steps = 1
  workdir = str(tmp_path_factory.mktemp('one_step_run'))
  train.train_and_evaluate(config, workdir)
  return workdir
