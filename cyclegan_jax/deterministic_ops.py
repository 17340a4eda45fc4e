"""XLA's deterministic GPU ops, for config.deterministic (bit-identical
reruns). Set in XLA_FLAGS before JAX starts its backend, by the
command-line entry points (main.py's train mode, the benchmark). Imports
nothing from JAX: XLA reads its flags once, when the backend starts.

On GPUs some kernels (scatter-adds, some convolution gradients) sum in an
order that varies from run to run; `--xla_gpu_deterministic_ops=true` makes
XLA pick deterministic ones, at some cost in speed. CPUs and TPUs are
deterministic without it, and XLA's CPU build accepts the flag and ignores
it (docs/reproducibility.md).
"""

import os

FLAG = '--xla_gpu_deterministic_ops'


def named(environ=os.environ) -> bool:
  """Whether XLA_FLAGS names the flag (with any value)."""
  return FLAG in environ.get('XLA_FLAGS', '')


def set_flag(deterministic: bool, environ=os.environ) -> bool:
  """Adds `--xla_gpu_deterministic_ops=true` to XLA_FLAGS when
  `deterministic` and the user's XLA_FLAGS does not name the flag already
  (theirs wins). Returns whether it was added."""
  if not deterministic or named(environ):
    return False
  environ['XLA_FLAGS'] = f'{environ.get("XLA_FLAGS", "")} {FLAG}=true'.strip()
  return True


def warning(deterministic: bool, platform: str, environ=os.environ) -> str | None:
  """A line to show when a deterministic run starts on a GPU whose backend
  started without the flag (a notebook that imported JAX first), else None."""
  if not deterministic or platform != 'gpu' or f'{FLAG}=true' in environ.get('XLA_FLAGS', ''):
    return None
  return (f'config.deterministic=True, but JAX started on this GPU without XLA_FLAGS='
          f'{FLAG}=true: reruns may differ in the last bits. Set it before JAX starts (main.py '
          'does), or set config.deterministic=False to say so')
