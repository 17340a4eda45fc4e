"""CycleGAN losses (Zhu et al. 2017, eqs. 1-3 and the identity loss of sec. 5.2)
and CUT's PatchNCE loss (Park et al. 2020, eq. 2)."""

import jax
import jax.numpy as jnp
import optax

GAN_MODES = ('lsgan', 'vanilla', 'wgangp')


def gan_loss(prediction: jax.Array, target_is_real: bool, gan_mode: str) -> jax.Array:
  """The official `GANLoss`: the mean over every patch of the prediction."""
  if gan_mode == 'lsgan':  # MSE to 1 (real) or 0 (fake).
    return jnp.mean((prediction - (1.0 if target_is_real else 0.0)) ** 2)
  if gan_mode == 'vanilla':  # BCE on logits.
    labels = jnp.full_like(prediction, 1.0 if target_is_real else 0.0)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(prediction, labels))
  if gan_mode == 'wgangp':  # The critic's score, to be raised for real, lowered for fake.
    return -jnp.mean(prediction) if target_is_real else jnp.mean(prediction)
  raise ValueError(f'config.train.gan_mode={gan_mode!r}: expected one of {", ".join(GAN_MODES)}')


def l1(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.mean(jnp.abs(a - b))


def discriminator_loss(disc_fn, real, fake, gan_mode: str) -> jax.Array:
  """0.5 * (loss(D(real), real) + loss(D(fake), fake)), as `backward_D_basic`."""
  return 0.5 * (gan_loss(disc_fn(real), True, gan_mode) + gan_loss(disc_fn(fake), False, gan_mode))


def gradient_penalty(disc_fn, real, fake, key, constant: float = 1.0) -> jax.Array:
  """WGAN-GP (Gulrajani et al. 2017), as the official `cal_gradient_penalty`
  with type 'mixed': E[(||grad D(x_hat)||_2 - constant)^2] on random
  per-image interpolations x_hat of real and fake images."""
  alpha = jax.random.uniform(key, (real.shape[0], 1, 1, 1))
  mixed = alpha * real + (1.0 - alpha) * fake
  grads = jax.grad(lambda x: jnp.sum(disc_fn(x)))(mixed)
  norms = jnp.sqrt(jnp.sum(grads.reshape(grads.shape[0], -1) ** 2, axis=1) + 1e-16)
  return jnp.mean((norms - constant) ** 2)


def patch_nce(query: jax.Array, key: jax.Array, num_images: int,
              temperature: float = 0.07, precision=None) -> jax.Array:
  """PatchNCE (CUT's patchnce.py with its defaults): per query row, the cross
  entropy of picking its own key among the keys of the other patches of the
  same image. `query` and `key` are (num_images * S, D) rows, image by image,
  of unit length; the keys (the real image's path) get no gradient. Returns
  the (num_images * S,) losses. `precision`: of the similarity matmul on
  accelerators (models.PRECISIONS).

  As the reference: logits are [q.k+, q.k-_1 ... q.k-_S] / temperature, the
  positive also in the negatives' diagonal, which is set to -10 (not -inf)
  before the division."""
  key = jax.lax.stop_gradient(key)
  n, dim = query.shape
  positive = jnp.sum(query * key, axis=1, keepdims=True)  # (N, 1)
  q = query.reshape(num_images, -1, dim)
  k = key.reshape(num_images, -1, dim)
  # (B, S, S): negatives within each image.
  negative = jnp.einsum('bsd,btd->bst', q, k, precision=precision)
  patches = q.shape[1]
  negative = jnp.where(jnp.eye(patches, dtype=bool), -10.0, negative).reshape(n, patches)
  logits = jnp.concatenate([positive, negative], axis=1) / temperature
  return jax.nn.logsumexp(logits, axis=1) - logits[:, 0]
