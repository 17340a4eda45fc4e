"""Paths that are local folders or object storage (`gs://bucket/...`): one
way to read, write, list and move what a workdir, an input or an output
holds, through etils.epath (which Orbax uses too).

gs:// goes through fsspec's gcsfs and, for checkpoint arrays, TensorStore;
both reach Google Cloud Storage with Application Default Credentials, and
both honour `STORAGE_EMULATOR_HOST` (for TensorStore this module sets
`TENSORSTORE_GCS_HTTP_URL` from it), so one variable points everything at an
emulator. TensorFlow's own GCS filesystem, which etils would otherwise pick
when TensorFlow is installed, honours no emulator, so epath is told not to
use it (`EPATH_USE_TF=false`, unless the environment says otherwise).

Writes are atomic where the store allows: a local file is written beside its
place and renamed; an object is created whole by its upload (no reader ever
sees half of it). Libraries that can only write local files (TensorBoard's
event writer, the log file, the profiler) write into a `Mirror`, a local
folder whose files are copied to the remote folder at each `sync()`.
"""

import builtins
import contextlib
import importlib.util
import os
import pathlib
import shutil
import tempfile
import uuid

from etils import epath
import fsspec

# Before epath chooses a backend for a gs:// path (it reads this each time).
os.environ.setdefault('EPATH_USE_TF', 'false')
# Listings read fresh: other processes write the same workdir (a pod's
# hosts; a trainer and an evaluator).
fsspec.config.conf.setdefault('gcs', {}).setdefault('use_listings_cache', False)
fsspec.config.conf.setdefault('gs', {}).setdefault('use_listings_cache', False)


def use_emulator_if_set(environ=os.environ) -> None:
  """Points TensorStore at STORAGE_EMULATOR_HOST where one is set (at import;
  again after setting it later); an emulator needs no credentials, so
  TensorStore is given a dummy token."""
  host = environ.get('STORAGE_EMULATOR_HOST')
  if host:
    environ.setdefault('TENSORSTORE_GCS_HTTP_URL', host)
    environ.setdefault('GOOGLE_AUTH_TOKEN_FOR_TESTING', 'emulator')
    # gcsfs's zonal-bucket probe speaks gRPC over TLS, which an emulator does
    # not: each probe would wait out a minute of retries.
    environ.setdefault('GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT', 'false')


use_emulator_if_set()

COPY_BLOCK_BYTES = 16 << 20


def is_remote(path) -> bool:
  """Whether `path` names object storage (scheme://...), not a local path."""
  return '://' in os.fspath(path)


def absolute(path) -> str:
  """A local path made absolute; a remote one as it is (without a trailing /)."""
  path = os.fspath(path)
  return path.rstrip('/') if is_remote(path) else os.path.abspath(path)


def join(*parts) -> str:
  return os.path.join(*map(os.fspath, parts))


def _check_scheme(path: str) -> None:
  """A one-line error for object storage this installation cannot reach."""
  if path.startswith('gs://'):
    if importlib.util.find_spec('gcsfs') is None:
      raise ImportError(f'{path}: gs:// paths need the optional extra "gcs" (gcsfs is '
                        'missing): pip install -e ".[gcs]"')
  elif is_remote(path):
    raise ValueError(f'{path}: expected a local path or gs://bucket/path (Google Cloud Storage)')


def Path(path) -> epath.Path:  # pylint: disable=invalid-name
  path = os.fspath(path)
  _check_scheme(path)
  return epath.Path(path)


def exists(path) -> bool:
  return Path(path).exists()


def isfile(path) -> bool:
  return Path(path).is_file()


def isdir(path) -> bool:
  return Path(path).is_dir()


def makedirs(path) -> None:
  """Creates a local folder and its parents; nothing for object storage,
  which has no folders (an object's name holds its whole path)."""
  if not is_remote(path):
    os.makedirs(path, exist_ok=True)


def listdir(path) -> list[str]:
  """The names in a folder (a remote folder: the next part of every object
  name under it)."""
  return sorted(p.name for p in Path(path).iterdir())


def glob(folder, pattern: str) -> list[str]:
  """Paths in `folder` whose names match `pattern` (glob syntax), sorted."""
  return sorted(os.fspath(p) for p in Path(folder).glob(pattern))


def files_under(folder) -> list[str]:
  """Every file under `folder`, at any depth, sorted (one listing of the
  prefix on object storage)."""
  folder = absolute(folder)
  if not is_remote(folder):
    return sorted(os.path.join(parent, name) for parent, _, names in os.walk(folder)
                  for name in names)
  _check_scheme(folder)
  filesystem, root = fsspec.core.url_to_fs(folder)
  scheme = folder.split('://', 1)[0]
  return sorted(f'{scheme}://{name}' for name in filesystem.find(root))


def write_problem(folder) -> str | None:
  """Why nothing can be written in the remote `folder` (a missing bucket, no
  permission: one line), or None when a probe object can be written there.
  The probe is then removed (a store that lets this process create objects
  but not delete them keeps it: a dot-file, which listings of images skip)."""
  folder = absolute(folder)
  _check_scheme(folder)
  probe = join(folder, f'.write_test_{uuid.uuid4().hex}')
  try:
    write_bytes_atomically(probe, b'')
  except FileNotFoundError:  # Its text: the upload's URL.
    return f'no such bucket: {"/".join(folder.split("/")[:3])}'
  except Exception as e:  # pylint: disable=broad-except  # OSError, or a store's own errors.
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
  with contextlib.suppress(Exception):
    remove(probe)
  return None


def check_writable(folder, name: str) -> None:
  """Before any work, a remote `folder` is written to once (write_problem),
  so that a missing bucket or one this process may not write to is one line
  naming `name` rather than the store's own error (a URL, or two lines). A
  local folder's makedirs says so itself."""
  if not is_remote(folder):
    return
  problem = write_problem(folder)
  if problem:
    raise OSError(f'{name}: cannot write to this folder ({problem}); expected a folder in a '
                  'bucket this process can write to')


def same_path(a, b) -> bool:
  """Whether two paths name the same file or folder: local ones after
  resolving links, `..` and repeated or trailing slashes; remote ones as the
  store names objects: repeated and trailing slashes and `.` dropped, `..`
  kept (an object name may hold it); a local path is never a remote one."""
  a, b = os.fspath(a), os.fspath(b)
  if is_remote(a) or is_remote(b):
    return _object_name(a) == _object_name(b)
  return os.path.realpath(a) == os.path.realpath(b)


def _object_name(path: str) -> str:
  if not is_remote(path):
    return path
  scheme, rest = path.split('://', 1)
  return f'{scheme}://{pathlib.PurePosixPath(rest)}'


def open(path, mode: str = 'r'):  # pylint: disable=redefined-builtin
  return Path(path).open(mode)


def read_text(path) -> str:
  return Path(path).read_text()


def read_bytes(path) -> bytes:
  return Path(path).read_bytes()


def write_bytes_atomically(path, data: bytes) -> None:
  """Writes `path` so that a kill mid-write leaves the old file (or none),
  never half a file: locally through a temporary file and a rename; an
  object is created whole by its upload."""
  path = os.fspath(path)
  if is_remote(path):
    Path(path).write_bytes(data)
    return
  with builtins.open(path + '.tmp', 'wb') as f:
    f.write(data)
  os.replace(path + '.tmp', path)


def write_text_atomically(path, text: str) -> None:
  write_bytes_atomically(path, text.encode('utf-8'))


def remove(path) -> None:
  Path(path).unlink()


def rmtree(path) -> None:
  Path(path).rmtree()


def copy(source, target) -> None:
  """Copies one file (either side local or remote), streamed in blocks: a
  large file never sits whole in memory. A local target appears by a rename
  when complete; an object when its upload is finalised."""
  source, target = os.fspath(source), os.fspath(target)
  if not is_remote(source) and not is_remote(target):
    shutil.copyfile(source, target)
  elif is_remote(target):
    with Path(source).open('rb') as reader, Path(target).open('wb') as writer:
      shutil.copyfileobj(reader, writer, COPY_BLOCK_BYTES)
  else:
    with Path(source).open('rb') as reader, builtins.open(target + '.tmp', 'wb') as writer:
      shutil.copyfileobj(reader, writer, COPY_BLOCK_BYTES)
    os.replace(target + '.tmp', target)


def copytree(source, target) -> None:
  """Copies every file under `source` to the same place under `target`."""
  if not is_remote(source) and not is_remote(target):
    shutil.copytree(source, target, dirs_exist_ok=True)
    return
  root = absolute(source)
  for item in files_under(root):
    relative = os.path.relpath(item, root)
    makedirs(os.path.dirname(join(target, relative)))
    copy(item, join(target, relative))


def move(source, target) -> None:
  """Moves a file or folder: a rename locally; on object storage a copy of
  every object, then the deletion of the originals (not atomic: a move cut
  short leaves both, never neither)."""
  if not is_remote(source) and not is_remote(target):
    shutil.move(source, target)
    return
  if isdir(source):
    copytree(source, target)
    rmtree(source)
  else:
    copy(source, target)
    remove(source)


@contextlib.contextmanager
def local_file(path):
  """A local path holding `path`'s bytes while inside: `path` itself when
  local, else a temporary copy (for libraries that read only local files)."""
  if not is_remote(path):
    yield os.fspath(path)
    return
  with tempfile.TemporaryDirectory(prefix='cyclegan_jax_') as folder:
    local = os.path.join(folder, os.path.basename(os.fspath(path)))
    copy(path, local)
    yield local


@contextlib.contextmanager
def local_output(path):
  """A local path to write while inside, copied to `path` when the body ends
  without an error: `path` itself when local."""
  if not is_remote(path):
    yield os.fspath(path)
    return
  with tempfile.TemporaryDirectory(prefix='cyclegan_jax_') as folder:
    local = os.path.join(folder, os.path.basename(os.fspath(path)))
    yield local
    copy(local, path)


class Mirror:
  """A local folder for libraries that write only local files, mirrored to
  `remote` by `sync()`: every file that is new or changed since the last
  sync (by size and modification time) is copied up whole. For a local
  `remote` there is no copy: `local` is `remote` itself and sync does
  nothing. Files already under `remote` named in `keep` (e.g. a log that
  grows across resumed runs) are first copied down, so that they grow."""

  def __init__(self, remote, keep: tuple[str, ...] = ()):
    self.remote = absolute(remote)
    self._copied = {}
    self._folder = None
    if not is_remote(self.remote):
      self.local = self.remote
      return
    self._folder = tempfile.TemporaryDirectory(prefix='cyclegan_jax_mirror_')
    self.local = self._folder.name
    for name in keep:
      if exists(join(self.remote, name)):
        copy(join(self.remote, name), os.path.join(self.local, name))
        self._copied[name] = self._stamp(name)

  def _stamp(self, relative: str):
    status = os.stat(os.path.join(self.local, relative))
    return status.st_size, status.st_mtime_ns

  def sync(self) -> None:
    if self._folder is None:
      return
    for folder, _, files in os.walk(self.local):
      for name in files:
        relative = os.path.relpath(os.path.join(folder, name), self.local)
        stamp = self._stamp(relative)
        if self._copied.get(relative) != stamp:
          copy(os.path.join(self.local, relative), join(self.remote, relative))
          self._copied[relative] = stamp

  def close(self) -> None:
    """Syncs a last time and removes the local copy."""
    self.sync()
    if self._folder is not None:
      self._folder.cleanup()
      self._folder = None
