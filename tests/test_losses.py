import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cyclegan_jax import losses


def test_lsgan_is_mse_to_one_or_zero():
  pred = jnp.array([[0.5, 2.0]])
  assert np.isclose(losses.gan_loss(pred, True, 'lsgan'), ((0.5 - 1) ** 2 + 1) / 2)
  assert np.isclose(losses.gan_loss(pred, False, 'lsgan'), (0.25 + 4) / 2)


def test_vanilla_is_bce_with_logits():
  pred = jnp.array([0.0, 3.0])
  expected_real = np.mean(np.log1p(np.exp(-np.array([0.0, 3.0]))))
  expected_fake = np.mean(np.log1p(np.exp(np.array([0.0, 3.0]))))
  assert np.isclose(losses.gan_loss(pred, True, 'vanilla'), expected_real, atol=1e-6)
  assert np.isclose(losses.gan_loss(pred, False, 'vanilla'), expected_fake, atol=1e-6)


def test_wgangp_scores_and_unknown_mode():
  pred = jnp.array([1.0, 3.0])
  assert losses.gan_loss(pred, True, 'wgangp') == -2.0
  assert losses.gan_loss(pred, False, 'wgangp') == 2.0
  with pytest.raises(ValueError, match='gan_mode'):
    losses.gan_loss(pred, True, 'hinge')


def test_discriminator_loss_is_half_the_sum():
  disc = lambda x: x
  real, fake = jnp.full((2, 3), 0.8), jnp.full((2, 3), 0.1)
  expected = 0.5 * ((0.8 - 1) ** 2 + 0.1 ** 2)
  assert np.isclose(losses.discriminator_loss(disc, real, fake, 'lsgan'), expected)


def test_gradient_penalty_of_a_linear_critic():
  """D(x) = sum(w * x) has gradient w everywhere: penalty (|w| - 1)^2."""
  w = jnp.full((1, 4, 4, 3), 0.5)
  disc = lambda x: jnp.sum(w * x, axis=(1, 2, 3))
  real = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 3))
  penalty = losses.gradient_penalty(disc, real, -real, jax.random.PRNGKey(1))
  assert np.isclose(penalty, (np.sqrt(48 * 0.25) - 1) ** 2, rtol=1e-5)
