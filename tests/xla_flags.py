"""The XLA flags of this test session and of the processes its tests start.

Tests run with main.py's XLA:CPU option (cyclegan_jax/xla_cpu_options.py)
plus one of their own: LLVM loop unrolling off. XLA:CPU unrolls the
fixed-size loops of jax.random's threefry kernels into megabytes of LLVM IR,
so initialising a train state compiles slowly: 10.7 s for the tiny config,
5.1 s with unrolling off (ten separate random draws: 27 s, 3.8 s). A 2-step
tiny run through main.py, compiling everything: 38 -> 28 s. The initial
parameters came out bit-identical either way (tiny, tiny_pix2pix and
tiny_cut configs); a train step rounds differently (its kernels are other
code), so runs compared with each other in this suite all use the same
flags. main.py keeps LLVM's default: a run compiles once and steps many
times, and without unrolling the benchmark's steps were no faster and some
slower (one run each on 2 cores: CycleGAN 128 px 1.84 -> 1.87 s, CUT 1.38 ->
1.45 s, translating at 256 px 0.32 -> 0.36 s).
"""

import os

from cyclegan_jax import deterministic_ops
from cyclegan_jax import xla_cpu_options

UNROLLING_OFF = '--xla_backend_extra_options=xla_cpu_disable_loop_unrolling'


def set_defaults(environ=os.environ) -> None:
  """main.py's XLA:CPU option and the deterministic-ops flag its training
  sets (config.deterministic's default), then UNROLLING_OFF, into
  environ['XLA_FLAGS'] (before JAX starts its backend; child processes
  inherit them). With the same flags, programs compiled in this process and
  in main.py's share the persistent compilation cache."""
  xla_cpu_options.set_defaults(environ)
  deterministic_ops.set_flag(True, environ)
  flags = environ.get('XLA_FLAGS', '')
  if 'xla_backend_extra_options' not in flags:
    environ['XLA_FLAGS'] = f'{flags} {UNROLLING_OFF}'.strip()


def with_cpu_devices(count: int, *flags: str) -> dict[str, str]:
  """The environment for a child process that sees `count` CPU devices,
  with UNROLLING_OFF and `flags` (instead of main.py's option: jaxlib's
  defaults unless `flags` says otherwise)."""
  xla = ' '.join((f'--xla_force_host_platform_device_count={count}', UNROLLING_OFF, *flags))
  return {**os.environ, 'XLA_FLAGS': xla.strip()}
