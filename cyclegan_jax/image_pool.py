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
import numpy as np


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


def relay(images, num_stored, num_devices: int):
  """The pools of several devices (numpy: images (D, pool_size, H, W, C) or
  None when the pool is off, num_stored (D,)) laid out for `num_devices`
  devices, as a resume on another device count needs: the stored images,
  taken one from each old pool in turn (the first image of every pool, then
  the second, ...), are dealt to the new pools in turn, each keeping up to
  pool_size; what does not fit is dropped, and a pool left part full fills
  again from new translations as a new pool does. The same device count
  gives the same pools back."""
  num_stored = np.asarray(num_stored)
  if images is None:
    return None, np.zeros((num_devices,), num_stored.dtype)
  images = np.asarray(images)
  pool_size = images.shape[1]
  order = [(device, k) for k in range(int(num_stored.max(initial=0)))
           for device in range(len(num_stored)) if k < num_stored[device]]
  new_images = np.zeros((num_devices, *images.shape[1:]), images.dtype)
  new_stored = np.zeros((num_devices,), num_stored.dtype)
  for position, (device, k) in enumerate(order):
    target, slot = position % num_devices, position // num_devices
    if slot < pool_size:
      new_images[target, slot] = images[device, k]
      new_stored[target] = slot + 1
  return new_images, new_stored
