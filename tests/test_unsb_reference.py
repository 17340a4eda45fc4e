"""UNSB against the official code: one step equal to the reference's step
written out in JAX, and the benchmark's --compare=torch averaged over k."""


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import tiny_unsb
from cyclegan_jax import families
from cyclegan_jax import sb_models



def _seed_with_k(config, want: int) -> int:
  """A seed whose first step draws the step index `want`."""
  for seed in range(50):
    rng = jax.random.split(jax.random.PRNGKey(seed), 5)[0]  # create_state's base key.
    if int(jax.random.randint(jax.random.fold_in(rng, 0), (), 0,
                              config.model.unsb_num_timesteps)) == want:
      return seed
  raise AssertionError(f'no seed below 50 draws k={want}')


def _reference_step(config, state, batch):
  """One step as the reference's forward and optimize_parameters
  (models/sb_model.py), written out with Optax and without our step's code,
  on one device, replaying our step's random draws: the three chains run one
  after the other, each x_t from the reference's formulas; fake =
  G([a_k, b_k]) and fake_B2 = G(a2_k) as two calls; D on real B vs fake_B,
  updated first; E (-mean E(p, p) + l + l^2) updated next; then one gradient
  of G and F (G's forward recomputed: autodiff of the whole) on LSGAN +
  lambda_SB SB + lambda_NCE (NCE_X + NCE_Y) / 2, lambda_NCE inside NCE too.
  Returns ({network: new params}, {network: gradient}, loss values, k)."""
  t, model = config.train, config.model
  generator = families.unsb.create_generators(model)['gen']
  disc = state.disc.apply_fn.__self__
  layers = families.cut.nce_layers(config)
  tx = optax.adam(t.lr, b1=0.5, b2=0.999)
  adam = lambda params, grads: optax.apply_updates(
      params, tx.update(grads, tx.init(params), params)[0])
  mse = lambda prediction, target: jnp.mean((prediction - target) ** 2)
  big_t, tau, width = model.unsb_num_timesteps, model.unsb_tau, 4 * model.ngf
  a, b, a2 = (jnp.asarray(batch[d]) for d in ('A', 'B', 'A2'))
  n = a.shape[0]
  g = lambda p, x, step, z: generator.apply({'params': p}, x, jnp.full((len(x),), step), z)

  # Our step's draws (families/unsb.py), replayed.
  k = int(jax.random.randint(jax.random.fold_in(state.rng, 0), (), 0, big_t))
  key = jax.random.fold_in(jax.random.fold_in(state.rng, 0), 0)
  k_chain, k_fake, k_nce_x, k_nce_y = jax.random.split(key, 4)
  chain_z, chain_noise = [], []
  for _ in range(k):
    k_chain, z_key, noise_key = jax.random.split(k_chain, 3)
    chain_z.append(jax.random.normal(z_key, (3 * n, width)))
    chain_noise.append(jax.random.normal(noise_key, (3 * n, *a.shape[1:])))
  z_fake = jax.random.normal(k_fake, (3 * n, width))

  # forward(): the time grid and each chain, as the reference writes them.
  incs = np.array([0] + [1 / (i + 1) for i in range(big_t - 1)])
  times = np.cumsum(incs)
  times = times / times[-1]
  times = np.concatenate([np.zeros(1), 0.5 * times[-1] + 0.5 * times]).astype(np.float32)

  def chain(x, rows):
    xt = x
    for step in range(1, k + 1):
      predicted = g(state.gen.params, xt, step - 1, chain_z[step - 1][rows])
      delta, denom = times[step] - times[step - 1], times[-1] - times[step - 1]
      inter, scale = delta / denom, delta * (1 - delta / denom)
      xt = (1 - inter) * xt + inter * predicted + np.sqrt(scale * tau) * chain_noise[step - 1][rows]
    return xt

  a_k, a2_k, b_k = chain(a, slice(0, n)), chain(a2, slice(n, 2 * n)), chain(b, slice(2 * n, None))

  def fakes(gp):
    fake = g(gp, jnp.concatenate([a_k, b_k]), k, jnp.concatenate([z_fake[:n], z_fake[2 * n:]]))
    return fake[:n], fake[n:], g(gp, a2_k, k, z_fake[n:2 * n])  # fake_B, idt_B, fake_B2.

  fake_b, _, fake_b2 = fakes(state.gen.params)
  d = lambda p, x: disc.apply({'params': p}, x, jnp.full((len(x),), k))
  e = lambda p, x, x2: disc.apply({'params': p}, x, jnp.full((len(x),), k), x2)

  def d_loss(dp):
    return 0.5 * (mse(d(dp, fake_b), 0.0) + mse(d(dp, b), 1.0))

  xx1, xx2 = jnp.concatenate([a_k, fake_b], -1), jnp.concatenate([a2_k, fake_b2], -1)

  def e_loss(ep):
    temp = jax.nn.logsumexp(e(ep, xx1, xx2).reshape(-1))
    return -jnp.mean(e(ep, xx1, xx1)) + temp + temp ** 2

  d_value, d_grads = jax.value_and_grad(d_loss)(state.disc.params)
  new_disc = adam(state.disc.params, d_grads)
  e_value, e_grads = jax.value_and_grad(e_loss)(state.entropy.params)
  new_e = adam(state.entropy.params, e_grads)

  def head(fp, i, feature, ids):  # Sample, Linear, ReLU, Linear, normalise.
    c = feature.shape[-1]
    x = feature.reshape(feature.shape[0], -1, c)[:, ids].reshape(-1, c)
    first, second = fp[f'mlp_{i}_0'], fp[f'mlp_{i}_1']
    x = jax.nn.relu(x @ first['kernel'] + first['bias']) @ second['kernel'] + second['bias']
    return x / (jnp.linalg.norm(x, axis=1, keepdims=True) + 1e-7)

  def nce(gp, fp, src, tgt, nce_key):  # calculate_NCE_loss
    z_key, ids_key = jax.random.split(nce_key)
    z = jax.random.normal(z_key, (n, width))
    encode = lambda x: generator.apply({'params': gp}, x, jnp.zeros((n,), jnp.int32), z,
                                       nce_layers=layers)
    feat_q, feat_k = encode(tgt), encode(src)
    total = 0.0
    for i, (ids_key_i, fq, fk) in enumerate(zip(jax.random.split(ids_key, len(layers)), feat_q,
                                                feat_k)):
      hw = fk.shape[1] * fk.shape[2]
      ids = jax.random.permutation(ids_key_i, hw)[:min(t.num_patches, hw)]
      q, key_ = head(fp, i, fq, ids), jax.lax.stop_gradient(head(fp, i, fk, ids))
      s = len(ids)
      l_pos = jnp.sum(q * key_, 1, keepdims=True)
      l_neg = jnp.einsum('bsd,btd->bst', q.reshape(n, s, -1), key_.reshape(n, s, -1))
      l_neg = jnp.where(jnp.eye(s, dtype=bool), -10.0, l_neg).reshape(-1, s)
      logits = jnp.concatenate([l_pos, l_neg], 1) / t.nce_t
      total += jnp.mean(-jax.nn.log_softmax(logits)[:, 0]) * t.lambda_nce
    return total / len(layers)

  def g_loss(params):
    gp, fp = params
    fake_b, idt_b, fake_b2 = fakes(gp)
    gan = mse(d(new_disc, fake_b), 1.0) * t.lambda_gan
    xx1, xx2 = jnp.concatenate([a_k, fake_b], -1), jnp.concatenate([a2_k, fake_b2], -1)
    et_xy = jnp.mean(e(new_e, xx1, xx1)) - jax.nn.logsumexp(e(new_e, xx1, xx2).reshape(-1))
    sb = -(big_t - k) / big_t * tau * et_xy + tau * jnp.mean((a_k - fake_b) ** 2)
    nce_x, nce_y = nce(gp, fp, a, fake_b, k_nce_x), nce(gp, fp, b, idt_b, k_nce_y)
    total = gan + t.lambda_sb * sb + t.lambda_nce * (nce_x + nce_y) * 0.5
    return total, {'gen/adversarial': gan, 'gen/sb': t.lambda_sb * sb,
                   'gen/nce_x': t.lambda_nce * 0.5 * nce_x, 'gen/nce_y': t.lambda_nce * 0.5 * nce_y}

  (_, terms), (g_grads, f_grads) = jax.value_and_grad(g_loss, has_aux=True)(
      (state.gen.params, state.patch_mlp.params))
  values = {name: float(v) for name, v in terms.items()}
  values.update({'disc/loss': float(d_value), 'entropy/loss': float(e_value)})
  new = {'gen': adam(state.gen.params, g_grads), 'disc': new_disc, 'entropy': new_e,
         'patch_mlp': adam(state.patch_mlp.params, f_grads)}
  grads = {'gen': g_grads, 'disc': d_grads, 'entropy': e_grads, 'patch_mlp': f_grads}
  return new, grads, values, k


@pytest.mark.parametrize('conditioning', sb_models.TIME_CONDITIONINGS)
def test_one_step_is_the_references_step(conditioning, image_folder):
  """Our step (the chains batched, k turns of a loop, G's fakes once under
  vjp) against the reference's written out, from the same weights and draws,
  at k = T - 1 = 2 (two bridge steps in each chain): every loss term within
  1e-5, every gradient (Adam's first moment after one step is (1 - beta1)
  times it) within 1e-4 of the network's largest, and every parameter where
  one Adam step puts it."""
  from cyclegan_jax.data import input_pipeline  # pylint: disable=import-outside-toplevel
  from tests import one_step  # pylint: disable=import-outside-toplevel
  config = tiny_unsb.get_config()
  config.data.image_dir = image_folder
  config.model.unsb_time_conditioning = conditioning
  config.model.unsb_tau = 0.1  # The bridge's noise large enough to show.
  config.seed = _seed_with_k(config, 2)
  sources = input_pipeline.open_sources(config.data)
  batches = input_pipeline.UnpairedBatches(sources['trainA'], sources['trainB'], config.data,
                                           config.seed, 2, 0, 1)
  batches.second_a = True
  batch = batches.batch(0)
  initial, new_state, metrics = one_step.first_step(config, batch, (32, 32))
  new, grads, reference, k = _reference_step(config, initial, batch)
  assert k == 2 and metrics['time_index'] == 2
  for name, value in reference.items():
    assert metrics[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
  lr, beta1 = config.train.lr, config.train.beta1
  for name, params in new.items():
    ours = getattr(new_state, name)
    scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(grads[name]))
    errors = jax.tree.map(lambda m, g: float(np.abs(m / (1 - beta1) - g).max()),
                          ours.opt_state.inner_state[0].mu, grads[name])
    assert max(jax.tree.leaves(errors)) < 1e-4 * scale, (name, scale, errors)
    # The first Adam step moves each parameter by about lr * sign(gradient);
    # a gradient within rounding of 0 (a bias before an instance norm, the
    # time layers 'official' leaves unused) may move either way (up to 2 lr).
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=2.5 * lr), ours.params,
                 params)


def test_the_benchmark_times_the_references_step_averaged_over_k():
  """--compare=torch for UNSB: the reference's step (unsb_reference.UNSB)
  beside ours, both grouped by the step index k (the reference's k in turn,
  ours as drawn) and averaged over k."""
  pytest.importorskip('torch')
  from cyclegan_jax import benchmark  # pylint: disable=import-outside-toplevel
  result = benchmark.run_benchmark(tiny_unsb.get_config(), steps=6, warmup=1, compare='torch')
  assert result['torch_steps_by_k'] == {0: 2, 1: 2, 2: 2}
  assert sum(result['steps_by_k'].values()) == 6 and set(result['steps_by_k']) <= {0, 1, 2}
  for prefix in ('', 'torch_'):
    means = result[f'{prefix}mean_step_seconds_by_k']
    assert result[f'{prefix}mean_step_seconds_over_k'] == pytest.approx(
        np.mean(list(means.values())))
  assert result['time_ratio_vs_torch_over_k'] == pytest.approx(
      result['mean_step_seconds_over_k'] / result['torch_mean_step_seconds_over_k'])
  with pytest.raises(ValueError,
                     match=r"^--compare=torch: config.model.kind='unsb' --task=translate"):
    benchmark.run_benchmark(tiny_unsb.get_config(), steps=1, warmup=0, task='translate',
                            compare='torch')
