"""UNSB's networks against the official ones written out in PyTorch
(cyclegan_jax/unsb_reference.py): the same outputs from the same weights,
both time conditionings, and what the official block's defect does."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cyclegan_jax import sb_models

torch = pytest.importorskip('torch')
from cyclegan_jax import unsb_reference  # pylint: disable=wrong-import-position

NGF, BLOCKS, MLP = 8, 2, 3


def _kernel(w):
  w = w.detach().numpy()
  return w.T if w.ndim == 2 else w.transpose(2, 3, 1, 0)


def _dense(layer):
  return {'kernel': _kernel(layer.weight), 'bias': layer.bias.detach().numpy()}


def _generator_params(net) -> dict:
  """The flax parameters holding the torch generator's weights."""
  params = {f'z_transform_{i}': _dense(net.z_transform[1 + 2 * i]) for i in range(1 + MLP)}
  params.update(time_embed_0=_dense(net.time_embed[0]), time_embed_1=_dense(net.time_embed[2]))
  convs = [net.model[1], net.model[4], net.model[8], net.model_upsample[1],
           net.model_upsample[5], net.model_upsample[9]]
  params.update({f'Conv_{i}': _dense(conv) for i, conv in enumerate(convs)})
  for i, block in enumerate(net.model_res):
    params[f'ResnetBlock_{i}'] = {
        'dense_time': _dense(block.Dense_time), 'conv_0': _dense(block.conv_block[1]),
        'style': _dense(block.style), 'adaptive': _dense(block.adaptive.style_net),
        'conv_1': _dense(block.conv_fin[2])}
  return params


def _discriminator_params(net) -> dict:
  params = {'t_embed_0': _dense(net.t_embed.main[0]), 't_embed_1': _dense(net.t_embed.main[2])}
  for n, block in enumerate(net.model_main):
    params[f'Conv_{n}'] = _dense(block.conv1)
    params[f'dense_{n}'] = _dense(block.dense)
  params[f'Conv_{len(net.model_main)}'] = _dense(net.final_conv)
  return params


def _same_tree(flax_params, ours):
  """`ours` has exactly the keys and shapes of the flax initialisation."""
  shapes = jax.tree.map(np.shape, flax_params)
  assert jax.tree.map(np.shape, ours) == shapes
  return jax.tree.map(jnp.asarray, ours)


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _inputs(channels=3, size=32, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.uniform(-1, 1, (2, size, size, channels)).astype(np.float32),
          rng.standard_normal((2, 4 * NGF)).astype(np.float32))


@pytest.mark.parametrize('conditioning', sb_models.TIME_CONDITIONINGS)
def test_generator_is_the_official_one(conditioning):
  torch.manual_seed(0)
  reference = unsb_reference.init_weights(unsb_reference.ResnetGeneratorNcsn(
      ngf=NGF, n_blocks=BLOCKS, n_mlp=MLP, time_conditioning=conditioning)).eval()
  ours = sb_models.ConditionalResnetGenerator(n_blocks=BLOCKS, ngf=NGF, n_mlp=MLP,
                                              time_conditioning=conditioning)
  x, z = _inputs()
  t = np.array([3, 1])
  initial = ours.init(jax.random.PRNGKey(0), x, t, z)['params']
  params = _same_tree(initial, _generator_params(reference))
  # The same number of parameters as the official module, its buffers aside.
  assert sum(p.size for p in jax.tree.leaves(params)) == sum(
      p.numel() for p in reference.parameters())
  with torch.no_grad():
    expected = reference(_nchw(x), torch.from_numpy(t), torch.from_numpy(z)).numpy()
    features = reference(_nchw(x), torch.from_numpy(t), torch.from_numpy(z), layers=[0, 4, 8, 12],
                         encode_only=True)
  got = ours.apply({'params': params}, x, t, z)
  np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), expected, atol=1e-5)
  got_features = ours.apply({'params': params}, x, t, z, nce_layers=(0, 4, 8, 12))
  for a, b in zip(got_features, features, strict=True):
    np.testing.assert_allclose(np.asarray(a).transpose(0, 3, 1, 2), b.numpy(), atol=1e-5)
  # Initialised as the official init_weights: xavier_normal(0.02), zero biases.
  biases = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(initial)[0]
            if jax.tree_util.keystr(path).endswith("['bias']")]
  assert len(biases) > 20 and all(np.all(np.asarray(b) == 0) for b in biases)

def test_the_official_block_ignores_t_and_the_fixed_one_does_not():
  """The official forward gives the same image for every t and no gradient to
  the time MLP, the blocks' time layers and first convolutions; the fixed
  one depends on t and trains them all."""
  x, z = _inputs()
  for conditioning in sb_models.TIME_CONDITIONINGS:
    net = sb_models.ConditionalResnetGenerator(n_blocks=BLOCKS, ngf=NGF, n_mlp=MLP,
                                               time_conditioning=conditioning)
    params = net.init(jax.random.PRNGKey(0), x, np.zeros(2, np.int32), z)['params']
    # Scaled up from the tiny init, so that t's effect shows above rounding.
    params = jax.tree.map(lambda p: p * 30 if p.ndim > 1 else p + 0.1, params)
    outputs = [net.apply({'params': params}, x, np.full(2, t), z) for t in range(4)]
    differences = [float(jnp.abs(o - outputs[0]).max()) for o in outputs[1:]]
    grads = jax.grad(lambda p: jnp.sum(net.apply({'params': p}, x, np.array([2, 3]), z)**2))(
        params)
    unused = [grads['time_embed_0']['kernel'], grads['ResnetBlock_0']['dense_time']['kernel'],
              grads['ResnetBlock_1']['conv_0']['kernel'], grads['ResnetBlock_0']['style']['kernel']]
    if conditioning == 'official':
      assert differences == [0.0, 0.0, 0.0]
      assert all(float(jnp.abs(g).max()) == 0 for g in unused)
    else:
      assert min(differences) > 1e-3
      assert all(float(jnp.abs(g).max()) > 0 for g in unused[:3])
      assert float(jnp.abs(unused[3]).max()) == 0  # `style` is never called by either.


def test_discriminator_and_entropy_network_are_the_official_ones():
  torch.manual_seed(1)
  for channels, pair in ((3, False), (12, True)):  # D on an image; E on two (x_t, x_t+1) pairs.
    reference = unsb_reference.init_weights(unsb_reference.NLayerDiscriminatorNcsn(
        channels, ndf=NGF)).eval()
    ours = sb_models.ConditionalPatchGAN(ndf=NGF)
    x, _ = _inputs(6 if pair else 3, seed=2)
    x2 = _inputs(6, seed=3)[0] if pair else None
    t = np.array([0, 4])
    initial = ours.init(jax.random.PRNGKey(0), x, t, x2)['params']
    params = _same_tree(initial, _discriminator_params(reference))
    with torch.no_grad():
      expected = reference(_nchw(x), torch.from_numpy(t),
                           None if x2 is None else _nchw(x2)).numpy()
    got = ours.apply({'params': params}, x, t, x2)
    assert got.shape == (2, 2, 2, 1)  # 32 px: 16, 8, 4, then k4 p1 twice.
    np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), expected, atol=1e-5)
