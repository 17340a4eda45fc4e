"""What a person sees in the terminal, and the whole log in a file.

By default the terminal shows a progress bar with rate and ETA, one line per
log step with the losses, one line per sample grid or checkpoint, results
(parameter counts, FID/KID, files written) and warnings and errors as they
come. The libraries' INFO lines (Orbax's checkpointing steps, JAX's backend
probing, clu's metric lines) go only to a log file (`log_file`: training's
W/train.log); `--verbosity=0` (INFO) or `--verbosity=1` (DEBUG), absl's
flag, shows them in the terminal too.
"""

import contextlib
import logging
import sys

from absl import logging as absl_logging
import tqdm


def quiet_terminal(verbose: bool) -> None:
  """Keeps INFO chatter off the terminal unless `verbose`."""
  absl_logging.get_absl_handler().setLevel(logging.NOTSET if verbose else logging.WARNING)


@contextlib.contextmanager
def log_file(path: str):
  """While inside, the whole log (INFO and up) is appended to `path`, in a
  folder that already exists (nothing is created for a log but the file).
  A file that cannot be opened is skipped: its folder's owner names that."""
  try:
    handler = logging.FileHandler(path)
  except OSError:
    yield
    return
  handler.setFormatter(absl_logging.PythonFormatter())
  handler.setLevel(logging.INFO)
  root = logging.getLogger()
  root.addHandler(handler)
  try:
    yield
  finally:
    root.removeHandler(handler)
    handler.close()


def status(text: str, show: bool = True) -> None:
  """A line for the log file, and for the terminal (stderr) where `show`."""
  logging.info('%s', text)
  if show:
    print(text, file=sys.stderr, flush=True)


def metrics_line(step: int, total: int, metrics: dict) -> str:
  """'step 100/2000: gen/total=13.13, cycle/aba=4.463, ...' (4 significant digits)."""
  values = ', '.join(f'{name}={value:.4g}' for name, value in sorted(metrics.items()))
  return f'step {step}/{total}: {values}'


class Progress:
  """A progress bar of steps (tqdm: rate and ETA) with lines written above
  it, shown only where `enabled` (process 0 of a multi-process run)."""

  def __init__(self, start: int, total: int, enabled: bool):
    self.enabled = enabled
    self.bar = tqdm.tqdm(total=total, initial=start, unit='step', desc='train',
                         disable=not enabled, dynamic_ncols=True, mininterval=1.0)

  def update(self, done: int) -> None:
    self.bar.update(done - self.bar.n)

  def line(self, text: str) -> None:
    """A line above the bar, on stderr with it (stdout keeps the results)."""
    if self.enabled:
      self.bar.write(text, file=self.bar.fp)
      logging.info('%s', text)

  def close(self) -> None:
    self.bar.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()  # Before an error's one line, so that it starts a line of its own.
