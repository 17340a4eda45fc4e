"""CycleGAN losses (Zhu et al. 2017, eqs. 1-3 and the identity loss of sec. 5.2)."""

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
