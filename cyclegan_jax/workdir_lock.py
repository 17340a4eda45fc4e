"""One trainer per workdir.

Process 0 holds an OS lock (`fcntl.flock`) on W/trainer.lock for the whole
run. The OS drops it when the process ends, however it ends (SIGKILL, a
crash, a lost node), so a killed trainer never blocks the next run; the
file's presence means nothing, and its text only names the holder for the
error message. flock works on local disks and most cluster filesystems; on
NFS it depends on the server (docs/faults.md).
"""

import contextlib
import fcntl
import os
import socket

import jax
from jax.experimental import multihost_utils
import numpy as np

LOCK_FILE = 'trainer.lock'


class WorkdirBusyError(RuntimeError):
  """Another live process is training in this workdir."""


def _holder(path: str) -> str:
  try:
    with open(path) as f:
      return f.read().strip() or 'a process that has not written its name yet'
  except OSError:
    return 'unknown process'


@contextlib.contextmanager
def hold(workdir: str):
  """Holds W/trainer.lock while the body runs; raises WorkdirBusyError at
  once, on every process, when another live process holds it."""
  path = os.path.join(workdir, LOCK_FILE)
  handle = None
  if jax.process_index() == 0:
    handle = open(path, 'a+')  # Not 'w': that would erase the holder's name.
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      handle.close()
      handle = None
    else:
      handle.seek(0)
      handle.truncate()
      handle.write(f'pid {os.getpid()} on host {socket.gethostname()}\n')
      handle.flush()
  busy = jax.process_index() == 0 and handle is None
  if jax.process_count() > 1:
    busy = bool(multihost_utils.broadcast_one_to_all(np.int32(busy)))
  if busy:
    raise WorkdirBusyError(
        f'{workdir}: another trainer is using this workdir ({_holder(path)}); wait for it '
        'to end (or stop it), or use another --workdir')
  try:
    yield
  finally:
    if handle is not None:
      handle.truncate(0)
      fcntl.flock(handle, fcntl.LOCK_UN)
      handle.close()
