"""The image history pool (Shrivastava et al. 2017) as pure functions.

The discriminators see a mix of the newest translated images and older ones,
which stabilises GAN training. This is the official `ImagePool.query`:
each image of a batch in turn is stored and returned while the pool is not
full; once it is full, with probability 0.5 a random stored image is returned
and the new one takes its place, otherwise the new image is returned.
"""

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class ImagePool:
  # (pool_size, H, W, C); the first `num_stored` are valid. None when the pool
  # is off (pool_size 0): checkpoints cannot hold arrays of size zero.
  images: jax.Array | None
  num_stored: jax.Array  # int32 scalar.


def create(pool_size: int, image_shape, dtype=jnp.float32) -> ImagePool:
  images = jnp.zeros((pool_size, *image_shape), dtype) if pool_size > 0 else None
  return ImagePool(images=images,
                   num_stored=jnp.zeros((), jnp.int32))


def query(pool: ImagePool, images: jax.Array, key: jax.Array):
  """Returns (new pool, images for the discriminator) for a batch of images."""
  if pool.images is None:  # pool_size=0 turns the pool off.
    return pool, images
  pool_size = pool.images.shape[0]

  def one_image(pool, inputs):
    image, key = inputs
    key_swap, key_index = jax.random.split(key)
    filling = pool.num_stored < pool_size
    swap = jax.random.uniform(key_swap) > 0.5
    index = jnp.where(filling, pool.num_stored,
                      jax.random.randint(key_index, (), 0, pool_size))
    stored = pool.images[index]
    returned = jnp.where(filling | ~swap, image, stored)
    kept = jnp.where(filling | swap, image, stored)
    pool = ImagePool(images=pool.images.at[index].set(kept),
                     num_stored=jnp.minimum(pool.num_stored + 1, pool_size))
    return pool, returned

  keys = jax.random.split(key, images.shape[0])
  return jax.lax.scan(one_image, pool, (images.astype(pool.images.dtype), keys))
