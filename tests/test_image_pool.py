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


def _pools(stored_per_device, pool_size=3):
  """Pools whose image k of device d is filled with 10 * d + k."""
  images = np.zeros((len(stored_per_device), pool_size, 1, 1, 1), np.float32)
  for d, count in enumerate(stored_per_device):
    for k in range(count):
      images[d, k] = 10 * d + k
  return images, np.array(stored_per_device, np.int32)


def _contents(images, num_stored):
  return [[int(images[d, k, 0, 0, 0]) for k in range(n)] for d, n in enumerate(num_stored)]


def test_relay_keeps_the_pools_for_the_same_device_count():
  images, stored = _pools([3, 3])
  assert _contents(*image_pool.relay(images, stored, 2)) == [[0, 1, 2], [10, 11, 12]]


def test_relay_to_fewer_devices_interleaves_and_keeps_what_fits():
  # 4 -> 1: the first image of every pool, then the second, ... up to 3.
  images, stored = _pools([2, 2, 2, 2])
  assert _contents(*image_pool.relay(images, stored, 1)) == [[0, 10, 20]]
  # 4 -> 2: dealt in turn, so each new pool holds images of two old ones.
  assert _contents(*image_pool.relay(images, stored, 2)) == [[0, 20, 1], [10, 30, 11]]


def test_relay_to_more_devices_deals_the_images_out_and_leaves_room():
  images, stored = _pools([3])
  relaid, counts = image_pool.relay(images, stored, 2)
  assert _contents(relaid, counts) == [[0, 2], [1]]
  assert relaid.shape == (2, 3, 1, 1, 1) and list(counts) == [2, 1]
  # A pool part full fills again from new images as a new pool does.
  pool = image_pool.ImagePool(images=jnp.asarray(relaid[1]), num_stored=jnp.int32(counts[1]))
  pool, returned = image_pool.query(pool, jnp.full((1, 1, 1, 1), 7.0), jax.random.PRNGKey(0))
  assert int(pool.num_stored) == 2 and float(returned[0, 0, 0, 0]) == 7.0


def test_relay_of_pools_that_are_off():
  images, counts = image_pool.relay(None, np.zeros((4,), np.int32), 2)
  assert images is None and counts.shape == (2,) and not counts.any()
