"""Parameter counts, shapes and initialisation against the official networks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import default
from configs import tiny
from cyclegan_jax.ops import xla_cpu_conv
from cyclegan_jax import models
from cyclegan_jax import state as state_lib

# Official counts at ngf = ndf = 64 with instance norm (networks.print_networks).
# unet_128, pixel and n_layers=5 are summed layer by layer from networks.py:
# unet_128 = unet_256 - one ngf*8 level (4,194,816 down + 8,389,120 up);
# pixel = 3*64+64 + 64*128+128 + 128+1; n_layers=5 adds two 512->512 k4 convs.
GENERATOR_PARAMS = {
    'resnet_9blocks': 11_378_179,
    'resnet_6blocks': 7_837_699,
    'unet_256': 54_409_603,
    'unet_128': 41_825_667,
}
DISCRIMINATOR_PARAMS = {('basic', 3): 2_764_737, ('n_layers', 3): 2_764_737,
                        ('n_layers', 5): 11_154_369, ('pixel', 3): 8_705}


def _abstract_params(module, size):
  variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
  return variables['params']


@pytest.mark.parametrize('name,expected', GENERATOR_PARAMS.items())
def test_generator_parameter_count_and_shape(name, expected):
  config = default.get_config().model
  config.generator = name
  generator = models.create_generator(config)
  size = 256 if name == 'unet_256' else 128
  params = _abstract_params(generator, size)
  assert models.count_params(params) == expected
  out = jax.eval_shape(lambda p, x: generator.apply({'params': p}, x), params,
                       jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32))
  assert out.shape == (2, size, size, 3)


@pytest.mark.parametrize('name,n_layers', DISCRIMINATOR_PARAMS)
def test_discriminator_parameter_count(name, n_layers):
  config = default.get_config().model
  config.discriminator, config.n_layers_d = name, n_layers
  params = _abstract_params(models.create_discriminator(config), 256)
  assert models.count_params(params) == DISCRIMINATOR_PARAMS[(name, n_layers)]


@pytest.mark.parametrize('name,patches', [('basic', 30), ('pixel', 256)])
def test_discriminator_patch_shape(name, patches):
  """The 70x70 PatchGAN scores a 30x30 grid of patches of a 256px image."""
  config = default.get_config().model
  config.discriminator = name
  disc = models.create_discriminator(config)
  out = jax.eval_shape(lambda: disc.apply(disc.init(jax.random.PRNGKey(0),
                                                    jnp.zeros((1, 256, 256, 3))),
                                          jnp.zeros((1, 256, 256, 3))))
  assert out.shape == (1, patches, patches, 1)


def test_resnet_with_n_blocks_and_small_sizes():
  config = default.get_config().model
  config.generator, config.ngf = 'resnet_2blocks', 8
  generator = models.create_generator(config)
  x = jnp.zeros((1, 36, 20, 3))
  variables = generator.init(jax.random.PRNGKey(0), x)
  y = generator.apply(variables, x)
  assert y.shape == x.shape and bool(jnp.all(jnp.abs(y) <= 1))


def test_initialisation_is_normal_002_with_zero_bias():
  config = default.get_config().model
  generator = models.create_generator(config)
  params = generator.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))['params']
  kernels = np.concatenate([np.ravel(p) for path, p in
                            jax.tree_util.tree_leaves_with_path(params)
                            if 'kernel' in jax.tree_util.keystr(path)])
  biases = [p for path, p in jax.tree_util.tree_leaves_with_path(params)
            if 'bias' in jax.tree_util.keystr(path)]
  assert abs(kernels.std() - 0.02) < 0.001 and abs(kernels.mean()) < 0.001
  assert all(not np.any(b) for b in biases)


def test_unknown_names_are_clear_errors():
  config = default.get_config().model
  config.generator = 'resnet_nine'
  with pytest.raises(ValueError, match='config.model.generator'):
    models.create_generator(config)
  config.discriminator = 'huge'
  with pytest.raises(ValueError, match='config.model.discriminator'):
    models.create_discriminator(config)


# pix2pix (norm='batch'): convolutions before a batch norm lose their bias and
# each batch norm has a weight and a bias (official counts, issue 6).
def test_pix2pix_parameter_counts():
  config = default.get_config().model
  config.generator, config.norm, config.dropout = 'unet_256', 'batch', True
  assert models.count_params(_abstract_params(models.create_generator(config), 256)) == 54_413_955
  disc = models.create_discriminator(config)
  variables = jax.eval_shape(disc.init, jax.random.PRNGKey(0), jnp.zeros((1, 256, 256, 6)))
  assert models.count_params(variables['params']) == 2_768_705  # Judges (input, output): 6 channels.


def test_batch_norm_uses_the_batch_statistics_at_test_time_too():
  norm = models.BatchNorm()
  params = norm.init(jax.random.PRNGKey(0), jnp.zeros((1, 1, 1, 10_000)))['params']
  # Official init: weight N(1, 0.02), bias 0.
  assert abs(float(jnp.mean(params['scale'])) - 1.0) < 2e-3
  assert abs(float(jnp.std(params['scale'])) - 0.02) < 2e-3 and not np.any(params['bias'])
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 5, 4, 2)) * 3.0 + 1.0
  params = {'scale': jnp.array([2.0, 0.5]), 'bias': jnp.array([0.1, -0.1])}
  mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
  expected = (x - mean) / np.sqrt(var + 1e-5) * params['scale'] + params['bias']
  np.testing.assert_allclose(norm.apply({'params': params}, x), expected, atol=1e-5)


def test_unet_sizes_and_dropout_at_test():
  """unet_<2^N> has N levels; with dropout_at_test the test-time output is
  random (a key per call) and only then."""
  config = default.get_config().model
  config.generator, config.ngf, config.norm, config.dropout = 'unet_64', 4, 'batch', True
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 64, 64, 3), minval=-1, maxval=1)
  outputs = {}
  for at_test in (False, True):
    config.dropout_at_test = at_test
    generator = models.create_generator(config)
    assert generator.num_downs == 6
    params = generator.init(jax.random.PRNGKey(0), x)['params']
    outputs[at_test] = [generator.apply({'params': params}, x, train=False,
                                        rngs={'dropout': jax.random.PRNGKey(k)}) for k in (1, 2)]
  np.testing.assert_array_equal(*outputs[False])
  assert float(jnp.max(jnp.abs(outputs[True][0] - outputs[True][1]))) > 1e-3
  for bad in ('unet_48', 'unet_16'):
    config.generator = bad
    with pytest.raises(ValueError, match='config.model.generator'):
      models.create_generator(config)


@pytest.mark.parametrize('subpixel', [True, False])
@pytest.mark.parametrize('kernel,padding,output_padding', [(3, 1, 1), (4, 1, 0)])
def test_both_forms_of_conv_transpose_equal_the_transposed_convolution(
    kernel, padding, output_padding, subpixel):
  """Each form (sub-pixel for XLA:CPU, XLA's own elsewhere) against Flax's
  ConvTranspose(transpose_kernel=True) on the same parameters: same init,
  outputs and gradients to float rounding."""
  lo = kernel - 1 - padding
  reference = nn.ConvTranspose(5, (kernel, kernel), strides=(2, 2),
                               padding=((lo, lo + output_padding),) * 2, transpose_kernel=True,
                               kernel_init=nn.initializers.normal(0.02))
  ours = models.ConvTranspose(5, kernel, padding, output_padding, subpixel=subpixel)
  x = jax.random.normal(jax.random.key(1), (2, 6, 10, 7))
  variables = reference.init(jax.random.key(0), x)
  assert jax.tree.all(jax.tree.map(jnp.array_equal, variables, ours.init(jax.random.key(0), x)))
  variables = {'params': {'kernel': variables['params']['kernel'],
                          'bias': jax.random.normal(jax.random.key(2), (5,))}}
  np.testing.assert_allclose(ours.apply(variables, x), reference.apply(variables, x), atol=1e-6)
  loss = lambda m: jax.grad(lambda v, x: jnp.sum(jnp.sin(m.apply(v, x))), argnums=(0, 1))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
               loss(ours)(variables, x), loss(reference)(variables, x))


@pytest.mark.parametrize('generator', ['resnet_2blocks', 'unet_32'])
def test_a_generator_translates_alike_in_both_platform_forms(generator):
  """The same parameters (a checkpoint moved between platforms) give the
  same translation with the CPU forms and with XLA's own."""
  config = tiny.get_config().model
  config.generator = generator
  cpu = models.create_generator(config)
  assert cpu.conv is models.CPU_CONV and cpu.conv_transpose is models.CPU_CONV_TRANSPOSE
  xla = cpu.clone(conv=nn.Conv, conv_transpose=models.ConvTranspose)
  x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-1, maxval=1)
  variables = cpu.init(jax.random.key(0), x)
  assert jax.tree.all(jax.tree.map(jnp.array_equal, variables, xla.init(jax.random.key(0), x)))
  np.testing.assert_allclose(cpu.apply(variables, x, train=False),
                             xla.apply(variables, x, train=False), atol=1e-5)


def test_precision_reaches_every_convolution_and_computes_float32_on_cpu():
  """config.model.precision='highest' asks float32 arithmetic of every
  convolution (XLA's forms, as on accelerators, carry it in the program);
  XLA:CPU computes float32 either way, so CPU results do not change."""
  config = tiny.get_config().model
  default = models.create_generator(config)
  config.precision = 'highest'
  highest = models.create_generator(config)
  assert highest == models.create_generator(config)  # Equal when built twice (jit's cache).
  x = jax.random.uniform(jax.random.key(1), (1, 32, 32, 3))
  variables = default.init(jax.random.key(0), x)
  xla = lambda g: g.clone(conv=models.with_precision(nn.Conv, models.precision(config)),
                          conv_transpose=models.with_precision(models.ConvTranspose,
                                                               models.precision(config)))
  program = str(jax.make_jaxpr(lambda v: xla(highest).apply(v, x, train=False))(variables))
  assert program.count('conv_general_dilated') == 10
  assert program.count('precision=(Precision.HIGHEST, Precision.HIGHEST)') == 10
  assert 'HIGHEST' not in str(jax.make_jaxpr(
      lambda v: default.clone(conv=nn.Conv, conv_transpose=models.ConvTranspose).apply(
          v, x, train=False))(variables))
  np.testing.assert_array_equal(default.apply(variables, x, train=False),
                                highest.apply(variables, x, train=False))
  disc = models.create_discriminator(config)
  assert disc.conv.keywords['precision'] == jax.lax.Precision.HIGHEST
  config.precision = 'high'
  with pytest.raises(ValueError, match="config.model.precision='high': expected one of "
                                       'default, highest'):
    models.create_generator(config)


@pytest.mark.parametrize('kernel,stride,padding,cin,cout', [
    (7, 1, 0, 6, 3),  # To few channels: the generators' last layer.
    (7, 1, 0, 3, 6),  # From few channels: the generators' first layer.
    (3, 2, 1, 5, 7),  # Strided: the generators' downsampling.
    (4, 2, 1, 3, 5),  # Strided from few channels: a discriminator's first layer.
    (4, 1, 1, 6, 1),  # Stride 1 to one channel: a discriminator's last layer.
    (3, 1, 0, 6, 7),  # Neither: XLA's own convolution and gradients.
])
def test_cpu_conv_equals_the_convolution(kernel, stride, padding, cin, cout):
  """cpu_conv's forms against lax.conv_general_dilated: outputs and both
  gradients to float rounding, on odd sizes and a batch of 2."""
  x = jax.random.normal(jax.random.key(0), (2, 15, 12, cin))
  k = jax.random.normal(jax.random.key(1), (kernel, kernel, cin, cout))
  pads = ((padding, padding), (padding, padding))
  conv = lambda f: lambda x, k: f(x, k, (stride, stride), pads,
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  ours, reference = conv(xla_cpu_conv.cpu_conv), conv(jax.lax.conv_general_dilated)
  np.testing.assert_allclose(ours(x, k), reference(x, k), rtol=1e-5, atol=1e-4)
  cotangent = jax.random.normal(jax.random.key(3), reference(x, k).shape)
  grads = lambda f: jax.grad(lambda x, k: jnp.sum(f(x, k) * cotangent), argnums=(0, 1))(x, k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4),
               grads(ours), grads(reference))


def test_cpu_conv_gradients_under_shard_map():
  """A kernel that does not vary over the devices (a discriminator's, in the
  generators' loss) gets its gradient summed over them, as from XLA's
  convolution (without that, JAX rejects the custom gradient's type)."""
  mesh = jax.make_mesh((1,), ('data',))
  x = jax.device_put(jax.random.normal(jax.random.key(0), (1, 10, 10, 4)),
                     jax.NamedSharding(mesh, P('data')))
  grads = {}
  for name, fn in (('ours', xla_cpu_conv.cpu_conv), ('lax', jax.lax.conv_general_dilated)):
    conv = nn.Conv(1, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
                   conv_general_dilated=fn)
    variables = conv.init(jax.random.key(1), x)
    local = lambda v, x: jax.grad(lambda v, x: jnp.sum(conv.apply(v, x) ** 2),
                                  argnums=(0, 1))(v, x)
    grads[name] = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P('data')),
                                        out_specs=(P(), P('data'))))(variables, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
               grads['ours'], grads['lax'])


def test_other_backends_get_xla_convolutions(monkeypatch):
  """cpu_conv's forms and the sub-pixel transposed convolution were measured
  on XLA:CPU only: the networks get them there (injected as their `conv` and
  `conv_transpose`), XLA's own convolutions elsewhere."""
  generator = models.create_generator(tiny.get_config().model)
  assert generator.conv is models.CPU_CONV
  assert generator.conv_transpose is models.CPU_CONV_TRANSPOSE
  assert models.CPU_CONV(8, (3, 3)).conv_general_dilated is xla_cpu_conv.cpu_conv
  assert models.CPU_CONV_TRANSPOSE(8, 3, 1, 1).subpixel
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  generator = models.create_generator(tiny.get_config().model)
  assert generator.conv is nn.Conv and generator.conv_transpose is models.ConvTranspose
  assert not models.ConvTranspose(8, 3, 1, 1).subpixel
  assert models.create_discriminator(tiny.get_config().model).conv is nn.Conv



# Official counts at input_nc = output_nc = 1 (grayscale, issue 13): the first
# and last 7x7 convolutions of resnet_9blocks lose 2 x 49 x 64 weights and 2
# biases; the basic D's first k4 convolution 2 x 16 x 64 weights.
def test_grayscale_parameter_counts():
  config = default.get_config()
  config.model.input_nc = config.model.output_nc = 1
  abstract = jax.eval_shape(lambda: state_lib.create_state(
      config, (64, 64), 1, steps_per_epoch=10))
  for name, expected in (('gen_ab', 11_365_633), ('gen_ba', 11_365_633),
                         ('disc_a', 2_762_689), ('disc_b', 2_762_689)):
    assert models.count_params(getattr(abstract, name).params) == expected, name
  assert abstract.pool_fake_a.images.shape[-1] == 1


@pytest.mark.parametrize('kind,input_nc,output_nc', [
    ('cyclegan', 1, 1), ('cyclegan', 3, 1), ('cyclegan', 1, 3), ('cyclegan', 4, 2),
    ('pix2pix', 1, 3), ('pix2pix', 3, 1)])
def test_channel_counts_match_the_official_networks(kind, input_nc, output_nc):
  """Every network of the state against networks.py built with the official
  define_G(input_nc, output_nc) / define_D(...) calls of cycle_gan_model.py
  and pix2pix_model.py."""
  torch_reference = pytest.importorskip('cyclegan_jax.torch_reference')
  config = default.get_config()
  if kind == 'pix2pix':
    config.model.kind, config.model.generator, config.model.norm = 'pix2pix', 'unet_256', 'batch'
  config.model.input_nc, config.model.output_nc = input_nc, output_nc
  size = 256 if kind == 'pix2pix' else 64
  abstract = jax.eval_shape(lambda: state_lib.create_state(
      config, (size, size), 1, steps_per_epoch=10))
  count = lambda net: sum(p.numel() for p in net.parameters())
  if kind == 'pix2pix':
    official = {'gen': torch_reference.UnetGenerator(8, 64, 'batch', input_nc=input_nc,
                                                      output_nc=output_nc),
                'disc': torch_reference.NLayerDiscriminator(input_nc + output_nc, 64, 3,
                                                            'batch')}
  else:
    resnet = lambda i, o: torch_reference.ResnetGenerator(64, 9, input_nc=i, output_nc=o)
    official = {'gen_ab': resnet(input_nc, output_nc), 'gen_ba': resnet(output_nc, input_nc),
                # Official D_B judges domain A (ours disc_a), D_A domain B.
                'disc_a': torch_reference.NLayerDiscriminator(input_nc, 64, 3),
                'disc_b': torch_reference.NLayerDiscriminator(output_nc, 64, 3)}
  for name, net in official.items():
    assert models.count_params(getattr(abstract, name).params) == count(net), name
  if kind == 'cyclegan':  # Each pool holds its own domain's fakes.
    assert abstract.pool_fake_a.images.shape[-1] == input_nc
    assert abstract.pool_fake_b.images.shape[-1] == output_nc


@pytest.mark.parametrize('generator,size,norm,dropout,checkpoints', [
    ('resnet_2blocks', 32, 'instance', False, 2),  # One per residual block.
    ('unet_64', 64, 'batch', True, 12),  # Each of 6 levels' down and up steps; level 4 drops.
])
def test_remat_keeps_parameters_outputs_and_gradients(generator, size, norm, dropout,
                                                      checkpoints):
  """config.model.remat recomputes residual blocks / U-Net levels in the
  backward pass: the same parameter tree (checkpoints and the PyTorch import
  unchanged), the same outputs, batch statistics and gradients, dropout masks
  included."""
  config = default.get_config().model
  config.generator, config.ngf, config.norm, config.dropout = generator, 8, norm, dropout
  plain = models.create_generator(config)
  config.remat = True
  rematted = models.create_generator(config)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, size, size, 3))
  variables = plain.init(jax.random.PRNGKey(0), x)
  assert (jax.tree.structure(rematted.init(jax.random.PRNGKey(0), x))
          == jax.tree.structure(variables))
  params, rest = variables['params'], {k: v for k, v in variables.items() if k != 'params'}
  apply = lambda module, p: module.apply({'params': p, **rest}, x, train=True,
                                         rngs={'dropout': jax.random.PRNGKey(2)},
                                         mutable=list(rest))
  jaxpr = jax.make_jaxpr(lambda p: apply(rematted, p))(params)
  assert sum(e.primitive.name == 'remat2' for e in jaxpr.jaxpr.eqns) == checkpoints
  apply = jax.jit(apply, static_argnums=0)  # One compile each, not one per operation.
  (y_remat, stats_remat), (y_plain, stats_plain) = apply(rematted, params), apply(plain, params)
  np.testing.assert_allclose(y_remat, y_plain, atol=1e-6)
  for a, b in zip(jax.tree.leaves(stats_remat), jax.tree.leaves(stats_plain)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  loss = lambda module: lambda p: jnp.sum(apply(module, p)[0] ** 2)
  for a, b in zip(jax.tree.leaves(jax.jit(jax.grad(loss(rematted)))(params)),
                  jax.tree.leaves(jax.jit(jax.grad(loss(plain)))(params))):
    # Compiled, the two programs are fused differently: float rounding of the
    # order of 1e-6 of the gradient's scale.
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(b).max()))
