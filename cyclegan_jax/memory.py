"""How much memory a compiled program needs, how much a device has, and a
one-line refusal when the first exceeds the second.

XLA sizes every buffer of a program when it compiles it, so the need is known
before anything runs: a program that would not fit is refused in one line
instead of being killed by the kernel (CPU) or failing inside XLA (GPU).
"""

import jax

GIB = 2**30


def format_bytes(n: int) -> str:
  return f'{n / GIB:.1f} GiB' if n >= GIB // 10 else f'{n / 2**20:.1f} MiB'


class InsufficientMemoryError(MemoryError):
  """A compiled program needs more memory than its device has available."""


def compiled_memory_bytes(compiled, arguments: bool = True) -> int | None:
  """Bytes one call of a compiled program holds at once, by XLA's memory
  analysis: arguments + outputs + temporaries, less the outputs that reuse
  donated arguments (`arguments=False`: what the call allocates beyond its
  arguments). None where the backend has no analysis."""
  try:
    analysis = compiled.memory_analysis()
  except Exception:  # Not implemented on every backend.
    return None
  if analysis is None:
    return None
  return int(analysis.argument_size_in_bytes * arguments + analysis.output_size_in_bytes
             + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)


def _field(path: str, key: str) -> int | None:
  """The integer after `key` in a file of `key value [unit]` lines
  (/proc/meminfo's 'MemAvailable:', a cgroup memory.stat's 'inactive_file')."""
  try:
    with open(path) as f:
      for line in f:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == key:
          return int(parts[1])
  except (OSError, ValueError):
    pass
  return None


def _read_meminfo_available(path: str = '/proc/meminfo') -> int | None:
  kilobytes = _field(path, 'MemAvailable:')
  return None if kilobytes is None else kilobytes * 1024


def _read_int(path: str) -> int | None:
  try:
    with open(path) as f:
      return int(f.read().split()[0])
  except (OSError, ValueError, IndexError):  # Missing, or 'max' (no limit).
    return None


def _cgroup_available_bytes(root: str = '/sys/fs/cgroup') -> int | None:
  """What this container's memory limit leaves (cgroup v2, else v1): the limit
  less the usage, counting inactive page cache as free as the kernel reclaims
  it. None without a limit. /proc/meminfo shows the host's memory even in a
  container limited to less, so the limit must be read here."""
  for limit_file, usage_file, stat_file, inactive_key in (
      ('memory.max', 'memory.current', 'memory.stat', 'inactive_file'),  # v2
      ('memory/memory.limit_in_bytes', 'memory/memory.usage_in_bytes', 'memory/memory.stat',
       'total_inactive_file')):  # v1
    limit = _read_int(f'{root}/{limit_file}')
    usage = _read_int(f'{root}/{usage_file}')
    if limit is None or usage is None or limit >= 2**60:  # v1 writes 2**63 - 1 page for none.
      continue
    return max(0, limit - usage + (_field(f'{root}/{stat_file}', inactive_key) or 0))
  return None


def _host_available_bytes() -> int | None:
  """The smaller of MemAvailable of /proc/meminfo (Linux: what can be
  allocated without swapping) and what a container's limit leaves. None when
  neither is known (other systems)."""
  known = [b for b in (_read_meminfo_available(), _cgroup_available_bytes()) if b is not None]
  return min(known) if known else None


def available_bytes(device=None) -> int | None:
  """Memory a new program can still use on `device` (default: the first):
  its allocator's limit less what is in use on accelerators; the host's
  available memory on CPU, whose devices share it. None when unknown."""
  device = device or jax.local_devices()[0]
  if device.platform == 'cpu':
    return _host_available_bytes()
  try:
    stats = device.memory_stats()
  except Exception:  # Not every backend reports.
    stats = None
  if stats and 'bytes_limit' in stats:
    return int(stats['bytes_limit']) - int(stats.get('bytes_in_use', 0))
  return None


def check_fits(compiled, what: str, advice: str, available: int | None = None) -> None:
  """Raises InsufficientMemoryError (one line: `what`, the need, what is
  available, `advice`) when what a call of `compiled` allocates beyond its
  arguments (already in memory when this is asked) exceeds the memory
  available (`available`, default: `available_bytes()`). Nothing when either
  is unknown: the program then runs and fails, if it must, as before."""
  needed = compiled_memory_bytes(compiled, arguments=False)
  available = available_bytes() if available is None else available
  if needed is None or available is None or needed <= available:
    return
  raise InsufficientMemoryError(
      f'{what} needs {format_bytes(needed)} of memory, and {format_bytes(available)} is '
      f'available on {jax.local_devices()[0].platform}; {advice}')
