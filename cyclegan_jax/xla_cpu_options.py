"""The XLA:CPU option the command-line entry points (main.py, the benchmark)
set by default, before JAX starts its backend. Imports nothing from JAX.

jaxlib 0.10 hands convolutions, matmuls and reductions to YNNPACK (its
`--xla_cpu_experimental_ynn_fusion_type` defaults to
`individual_dot,individual_convolution,reduce`). YNNPACK's convolutions at
64x64x256 and larger ran at one core's speed on the CPUs measured
(docs/performance.md), so we drop `individual_convolution` from that list and keep
convolutions in XLA's own Eigen code: translating 256px images 2.9x faster,
a 128px batch-4 train step 2.1x faster there, batch 1 no slower. Results
change only by float rounding, which GAN training amplifies as it amplifies
any: after 3 steps of the tiny config, one device with and without the
option differ by up to 6e-4 in kernels and 1e-2 in outputs (Adam's first
steps are close to lr * sign(gradient), and rounding flips the sign of
near-zero gradients). YNNPACK's convolutions sum each image of a batch in the
same order whatever the batch size, which keeps 4 devices of one image each
within 1e-7 of one device of 4 images; Eigen's do not, so the test of that
(tests/test_distributed.py) runs with jaxlib's default.

Library code (`import cyclegan_jax.train` in a notebook) is left to the
user's own XLA_FLAGS; tests/conftest.py sets the option as main.py does.
"""

import importlib.metadata
import os

YNN_FUSION_FLAG = '--xla_cpu_experimental_ynn_fusion_type'
YNN_FUSION_DEFAULT = 'individual_dot,reduce'  # jaxlib 0.10's default less convolutions.
# jaxlib versions that have the flag and were measured with it; XLA aborts on
# a flag it does not know, so other versions get nothing.
MEASURED_JAXLIB = ('0.10.',)


def set_defaults(environ=os.environ) -> bool:
  """Adds `--xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce` to
  XLA_FLAGS unless the user's XLA_FLAGS names that flag already (theirs wins)
  or this jaxlib was not measured with it. Returns whether it was added."""
  flags = environ.get('XLA_FLAGS', '')
  if YNN_FUSION_FLAG in flags:
    return False
  try:
    version = importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    return False
  if not version.startswith(MEASURED_JAXLIB):
    return False
  environ['XLA_FLAGS'] = f'{flags} {YNN_FUSION_FLAG}={YNN_FUSION_DEFAULT}'.strip()
  return True
