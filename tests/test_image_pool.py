import jax
import jax.numpy as jnp
import numpy as np

from cyclegan_jax import image_pool

SHAPE = (2, 2, 1)


def _images(start, n):
  """Images whose every pixel is its id, so returned images can be traced."""
  return jnp.arange(start, start + n, dtype=jnp.float32)[:, None, None, None] * jnp.ones(SHAPE)


def test_fills_first_returning_the_new_images():
  pool = image_pool.create(4, SHAPE)
  pool, out = image_pool.query(pool, _images(1, 3), jax.random.PRNGKey(0))
  np.testing.assert_array_equal(out, _images(1, 3))
  assert int(pool.num_stored) == 3
  pool, out = image_pool.query(pool, _images(4, 1), jax.random.PRNGKey(1))
  np.testing.assert_array_equal(out, _images(4, 1))
  np.testing.assert_array_equal(np.sort(pool.images[:, 0, 0, 0]), [1, 2, 3, 4])


def test_when_full_swaps_about_half_the_time_and_keeps_its_size():
  pool = image_pool.create(10, SHAPE)
  pool, _ = image_pool.query(pool, _images(1, 10), jax.random.PRNGKey(0))
  query = jax.jit(image_pool.query)
  swapped, total, next_id = 0, 0, 11
  for step in range(100):
    new = _images(next_id, 4)
    before = set(np.asarray(pool.images[:, 0, 0, 0]).tolist())
    pool, out = query(pool, new, jax.random.PRNGKey(step + 1))
    ids = np.asarray(out[:, 0, 0, 0])
    # Each returned image is the new one or one that was stored before.
    for new_id, returned in zip(range(next_id, next_id + 4), ids):
      assert returned == new_id or returned in before or returned in range(next_id, new_id)
    swapped += int(np.sum(ids != np.arange(next_id, next_id + 4)))
    total += 4
    next_id += 4
    assert pool.images.shape == (10, *SHAPE) and int(pool.num_stored) == 10
  assert 0.4 < swapped / total < 0.6
  # Every swap stored the new image: the pool now holds recent images.
  assert np.min(pool.images[:, 0, 0, 0]) > 11


def test_size_zero_turns_the_pool_off():
  pool = image_pool.create(0, SHAPE)
  new_pool, out = image_pool.query(pool, _images(1, 3), jax.random.PRNGKey(0))
  assert out is not None and np.array_equal(out, _images(1, 3))
  assert new_pool.images is None and int(new_pool.num_stored) == 0
