"""memory: XLA's size of a compiled program, the memory available, and the
one-line refusal of a program that cannot fit (translate and train use it)."""

import jax
import jax.numpy as jnp
import pytest

from configs import tiny
from cyclegan_jax import memory
from cyclegan_jax import train

GIB = 2**30


def _write(root, files):
  for name, text in files.items():
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize('files,expected', [
    # cgroup v2: limit less usage, inactive page cache counted as free.
    ({'memory.max': '8589934592\n', 'memory.current': '3221225472\n',
      'memory.stat': 'anon 1\ninactive_file 1073741824\nactive_file 5\n'}, 6 * GIB),
    ({'memory.max': 'max\n', 'memory.current': '3221225472\n'}, None),  # v2, no limit.
    # cgroup v1, and its "no limit" (2**63 less a page).
    ({'memory/memory.limit_in_bytes': '4294967296\n', 'memory/memory.usage_in_bytes': '1073741824\n',
      'memory/memory.stat': 'cache 9\ntotal_inactive_file 0\n'}, 3 * GIB),
    ({'memory/memory.limit_in_bytes': '9223372036854771712\n',
      'memory/memory.usage_in_bytes': '1073741824\n'}, None),
    ({}, None),  # No cgroup files (not Linux, or not mounted).
])
def test_a_containers_memory_limit_is_read(tmp_path, files, expected):
  _write(tmp_path, files)
  assert memory._cgroup_available_bytes(str(tmp_path)) == expected


def test_available_memory_is_known_on_this_machine():
  available = memory.available_bytes()
  assert available is not None and available > 0


@pytest.mark.parametrize('meminfo,cgroup,expected', [
    (8 * GIB, 3 * GIB, 3 * GIB), (2 * GIB, 3 * GIB, 2 * GIB), (2 * GIB, None, 2 * GIB),
    (None, 3 * GIB, 3 * GIB), (None, None, None)])
def test_the_host_has_the_smaller_of_meminfo_and_the_container_limit(monkeypatch, meminfo, cgroup,
                                                                    expected):
  # Fixed readings: the machine's own change from one read to the next (other
  # processes, parallel tests) must not decide the test.
  monkeypatch.setattr(memory, '_read_meminfo_available', lambda: meminfo)
  monkeypatch.setattr(memory, '_cgroup_available_bytes', lambda: cgroup)
  assert memory.available_bytes(jax.devices('cpu')[0]) == expected


def test_a_program_larger_than_the_memory_is_refused_in_one_line():
  x = jnp.ones((256, 256))
  compiled = jax.jit(lambda a: jnp.sin(a @ a) @ a).lower(x).compile()
  with_arguments = memory.compiled_memory_bytes(compiled)
  allocated = memory.compiled_memory_bytes(compiled, arguments=False)
  assert with_arguments - allocated == x.nbytes and allocated >= x.nbytes  # At least the output.
  memory.check_fits(compiled, 'this', 'that', available=allocated)  # Fits exactly: nothing.
  with pytest.raises(memory.InsufficientMemoryError) as raised:
    memory.check_fits(compiled, 'squaring a matrix', 'use a smaller one', available=allocated - 1)
  message = str(raised.value)
  assert '\n' not in message and message.startswith('squaring a matrix needs 0.5 MiB of memory, and 0.5 MiB')
  assert message.endswith(' is available on cpu; use a smaller one')


def test_training_that_cannot_fit_is_refused_before_its_first_step(image_folder, tmp_path,
                                                                   monkeypatch):
  monkeypatch.setattr(memory, 'available_bytes', lambda device=None: 1024)
  config = tiny.get_config()
  config.data.image_dir = image_folder
  config.train.num_steps = 1
  with pytest.raises(memory.InsufficientMemoryError) as raised:
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  message = str(raised.value)
  assert '\n' not in message
  assert message.startswith('a train step of 1 32x32 images needs ')
  assert 'and 0.0 MiB is available on cpu; lower config.data.crop_size or ' in message
  assert 'config.model.remat=True' in message
