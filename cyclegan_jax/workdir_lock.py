"""One trainer per workdir.

A local workdir: process 0 holds an OS lock (`fcntl.flock`) on
W/trainer.lock for the whole run. The OS drops it when the process ends,
however it ends (SIGKILL, a crash, a lost node), so a killed trainer never
blocks the next run; the file's presence means nothing, and its text only
names the holder for the error message. flock works on local disks and most
cluster filesystems; on NFS it depends on the server (docs/faults.md).

A workdir on Google Cloud Storage (gs://): the lock is the object
W/trainer.lock itself, created only if absent (GCS's `ifGenerationMatch=0`:
of two trainers that start together, exactly one creates it). The holder
rewrites it every RENEW_SECONDS, each time only if it is still the version it
wrote, and deletes it when it ends. Nothing on object storage notices a
killed process, so a lock not rewritten for STALE_SECONDS (by the store's
clock) is stale: the next trainer takes it over, again only if nobody else
rewrote it first, and says so in a warning. A trainer whose lock was taken
over (it was paused for longer than that) warns too.
"""

import contextlib
import datetime
import fcntl
import os
import socket
import sys
import threading

import jax
from jax.experimental import multihost_utils
import numpy as np

from cyclegan_jax import storage

LOCK_FILE = 'trainer.lock'
RENEW_SECONDS = 60
STALE_SECONDS = 300


class WorkdirBusyError(RuntimeError):
  """Another live process is training in this workdir."""


def _holder(path: str) -> str:
  try:
    with open(path) as f:
      return f.read().strip() or 'a process that has not written its name yet'
  except OSError:
    return 'unknown process'


def _me() -> str:
  return f'pid {os.getpid()} on host {socket.gethostname()}'


def _warn(message: str) -> None:
  print(f'warning: {message}', file=sys.stderr, flush=True)


@contextlib.contextmanager
def _file_lock(workdir: str):
  """(None when another process holds it, else a token) while inside."""
  path = os.path.join(workdir, LOCK_FILE)
  handle = open(path, 'a+')  # Not 'w': that would erase the holder's name.
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    handle.close()
    yield None, _holder(path)
    return
  handle.seek(0)
  handle.truncate()
  handle.write(_me() + '\n')
  handle.flush()
  try:
    yield handle, None
  finally:
    handle.truncate(0)
    fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()


def _blob(path: str):
  """The google-cloud-storage Blob of a gs:// path (STORAGE_EMULATOR_HOST,
  when set, points the client at an emulator)."""
  if not path.startswith('gs://'):
    raise ValueError(f'{path}: object-storage workdirs are gs:// paths (Google Cloud Storage)')
  try:
    from google.cloud import storage as gcs  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ImportError('a gs:// workdir needs the optional extra "gcs" (google-cloud-storage is '
                      'missing): pip install -e ".[gcs]"') from None
  bucket, _, name = path[len('gs://'):].partition('/')
  return gcs.Client().bucket(bucket).blob(name)


def _age_seconds(blob) -> float:
  """How long ago the object was last written, by the store's clock (as far
  as this machine's clock agrees with it)."""
  return (datetime.datetime.now(datetime.timezone.utc) - blob.updated).total_seconds()


@contextlib.contextmanager
def _object_lock(workdir: str):
  """The object-storage lock (module docstring): (None, holder) when a live
  trainer holds it, else (the blob, None) while inside."""
  from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
  path = storage.join(workdir, LOCK_FILE)
  blob = _blob(path)
  for _ in range(3):  # The holder may delete it between our two requests.
    try:
      blob.upload_from_string(_me(), if_generation_match=0)
      break
    except exceptions.PreconditionFailed:
      pass
    try:
      blob.reload()
      holder, age = blob.download_as_text(), _age_seconds(blob)
    except exceptions.NotFound:
      continue
    if age < STALE_SECONDS:
      yield None, f'{holder}, last renewed {age:.0f} s ago'
      return
    try:
      blob.upload_from_string(_me(), if_generation_match=blob.generation)
    except exceptions.PreconditionFailed:
      yield None, 'a trainer that took over a stale lock a moment ago'
      return
    _warn(f'{path}: took over a stale lock of {holder}, not renewed for {age:.0f} s '
          f'(more than {STALE_SECONDS} s)')
    break
  else:
    yield None, 'a trainer that started at the same time'
    return

  stop, lost = threading.Event(), threading.Event()

  def renew():
    while not stop.wait(RENEW_SECONDS):
      try:
        blob.upload_from_string(_me(), if_generation_match=blob.generation)
      except exceptions.PreconditionFailed:
        lost.set()
        _warn(f'{path}: another trainer took over this workdir\'s lock (this one was not '
              f'renewed for {STALE_SECONDS} s); two trainers may now write here: stop one')
        return
      except Exception as e:  # pylint: disable=broad-except  # A network error: try again later.
        _warn(f'{path}: could not renew the lock ({type(e).__name__}); trying again')

  thread = threading.Thread(target=renew, name='workdir_lock', daemon=True)
  thread.start()
  try:
    yield blob, None
  finally:
    stop.set()
    thread.join()
    if not lost.is_set():
      with contextlib.suppress(Exception):  # Only the version we wrote.
        blob.delete(if_generation_match=blob.generation)


@contextlib.contextmanager
def hold(workdir: str):
  """Holds W/trainer.lock while the body runs; raises WorkdirBusyError at
  once, on every process, when another live process holds it."""
  lock = _object_lock if storage.is_remote(workdir) else _file_lock
  with contextlib.ExitStack() as stack:
    token, holder = None, None
    if jax.process_index() == 0:
      token, holder = stack.enter_context(lock(workdir))
    busy = jax.process_index() == 0 and token is None
    if jax.process_count() > 1:
      busy = bool(multihost_utils.broadcast_one_to_all(np.int32(busy)))
    if busy:
      if holder is None and not storage.is_remote(workdir):
        holder = _holder(os.path.join(workdir, LOCK_FILE))
      raise WorkdirBusyError(
          f'{workdir}: another trainer is using this workdir ({holder or "unknown process"}); '
          'wait for it to end (or stop it), or use another --workdir')
    yield
