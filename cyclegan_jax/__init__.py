"""cyclegan_jax: CycleGAN and pix2pix in JAX/Flax.

Importing the package sets the XLA:CPU options that make our step fast on a
CPU, before JAX starts its backend (README, Performance). An option the user
already set in XLA_FLAGS is left as the user set it.
"""

import importlib.metadata
import os

# XLA:CPU hands convolutions to YNNPACK by default (jaxlib 0.10); at the
# resolutions we train at those run 2-3x slower than XLA's own (Eigen)
# convolutions on a 2-core CPU: translating 256px, 1.58 s against 0.59 s;
# a 128px step at batch 4, 25.6 s against 14.2 s. Only the library that runs
# each convolution changes: results agree to float rounding. Applied only to
# the jaxlib versions it was measured with, since XLA refuses to start on a
# flag it does not know.
CPU_XLA_FLAGS = {'xla_cpu_experimental_ynn_fusion_type': ''}
_MEASURED_JAXLIB = ('0.10.',)


def _set_cpu_xla_flags() -> None:
  try:
    version = importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    return
  if not version.startswith(_MEASURED_JAXLIB):
    return
  flags = os.environ.get('XLA_FLAGS', '')
  added = [f'--{name}={value}' for name, value in CPU_XLA_FLAGS.items()
           if f'--{name}=' not in flags]
  if added:
    os.environ['XLA_FLAGS'] = ' '.join([flags, *added]).strip()


_set_cpu_xla_flags()
