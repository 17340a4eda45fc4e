"""`cpu_conv`: `lax.conv_general_dilated` for nn.Conv on XLA:CPU, computing
the convolutions XLA:CPU runs slowly (and their gradients) in other forms
that give the same sums (docs/performance.md). Chosen once per platform by
models.platform_conv; other backends use XLA's own convolution."""

import functools

import jax
import jax.numpy as jnp


# A convolution to or from at most this many channels (the generators' 64 <-> 3
# channel 7x7 layers, the discriminators' 512 -> 1) runs far slower on XLA:CPU
# than its FLOPs suggest; `cpu_conv` computes it, and its gradients, otherwise.
FEW_CHANNELS = 4


def _lax_conv(x, kernel, stride=(1, 1)):
  return jax.lax.conv_general_dilated(x, kernel, stride, 'VALID',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _taps_conv(x, kernel):
  """A stride-1 'VALID' convolution as one matmul to every tap's outputs, then
  a sum of the taps' shifted outputs: the same sums in another order. With
  few output channels the matmul is wide and cheap, and the shifted sums
  touch only kh * kw * out channels per pixel."""
  kh, kw, cin, cout = kernel.shape
  n, h, w, _ = x.shape
  ho, wo = h - kh + 1, w - kw + 1
  z = jnp.dot(x, kernel.transpose(2, 0, 1, 3).reshape(cin, kh * kw * cout))
  z = z.reshape(n, h, w, kh, kw, cout)
  y = z[:, :ho, :wo, 0, 0]
  for i in range(kh):
    for j in range(kw):
      if i or j:
        y = y + z[:, i:i + ho, j:j + wo, i, j]
  return y


def _strided_kernel_grad(x, g, kernel_shape, stride):
  """The kernel gradient of a strided 'VALID' convolution as one matmul per
  tap: tap (i, j) saw the strided input pixels x[i::s, j::s]; XLA:CPU computes
  it as a window-dilated convolution, 2-4x slower at our sizes."""
  kh, kw, cin, cout = kernel_shape
  (sy, sx), (n, ho, wo, _) = stride, g.shape
  g = g.reshape(n * ho * wo, cout)
  taps = [jnp.dot(x[:, i:i + sy * (ho - 1) + 1:sy, j:j + sx * (wo - 1) + 1:sx, :]
                  .reshape(n * ho * wo, cin).T, g)
          for i in range(kh) for j in range(kw)]
  return jnp.stack(taps).reshape(kernel_shape)


def _few_outputs_kernel_grad(x, g, kernel_shape):
  """The kernel gradient of a stride-1 'VALID' convolution to few channels, as
  one matmul of the input against the output gradient's kh * kw shifted
  copies (cheap to build: few channels): column (i, j, o) at input pixel q
  holds g[q - (i, j), o]."""
  kh, kw, cin, cout = kernel_shape
  n, h, w, _ = x.shape
  padded = jnp.pad(g, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
  # Rows first, then columns: two concatenations of kh and kw slices, which
  # XLA fuses (one of kh * kw slices it leaves unfused, 3x slower).
  rows = jnp.stack([padded[:, kh - 1 - i:kh - 1 - i + h] for i in range(kh)], axis=3)
  cols = jnp.stack([rows[:, :, kw - 1 - j:kw - 1 - j + w] for j in range(kw)], axis=4)
  grad = jnp.dot(x.reshape(n * h * w, cin).T, cols.reshape(n * h * w, kh * kw * cout))
  return grad.reshape(cin, kh, kw, cout).transpose(1, 2, 0, 3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _valid_conv(x, kernel, stride):
  if stride == (1, 1) and kernel.shape[3] <= FEW_CHANNELS:
    return _taps_conv(x, kernel)
  return _lax_conv(x, kernel, stride)


def _valid_conv_fwd(x, kernel, stride):
  return _valid_conv(x, kernel, stride), (x, kernel)


def _valid_conv_bwd(stride, residuals, g):
  x, kernel = residuals
  kh, kw, cin, cout = kernel.shape
  if stride == (1, 1) and cin <= FEW_CHANNELS:
    # The input gradient is a convolution to cin channels: the taps form again.
    padded = jnp.pad(g, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
    dx = _taps_conv(padded, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))
  else:
    dx, = jax.vjp(lambda x: _lax_conv(x, kernel, stride), x)[1](g)
  if stride != (1, 1):
    dkernel = _strided_kernel_grad(x, g, kernel.shape, stride)
  elif cout <= FEW_CHANNELS:
    dkernel = _few_outputs_kernel_grad(x, g, kernel.shape)
  else:
    dkernel, = jax.vjp(lambda k: _lax_conv(x, k, stride), kernel)[1](g)
  return _like(dx, x), _like(dkernel, kernel)


def _like(grad, primal):
  """Under shard_map a gradient varies over the devices wherever its cotangent
  does; for a primal that does not (the discriminators' parameters in the
  generators' loss), it is summed over them, as JAX's own transposes do."""
  varying = lambda a: jax.typeof(a).manual_axis_type.varying
  extra = tuple(sorted(varying(grad) - varying(primal)))
  return jax.lax.psum(grad, extra) if extra else grad


_valid_conv.defvjp(_valid_conv_fwd, _valid_conv_bwd)


def cpu_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
             dimension_numbers=None, feature_group_count=1, precision=None,
             preferred_element_type=None):
  """`lax.conv_general_dilated` for nn.Conv on XLA:CPU (NHWC, HWIO, explicit
  padding, no dilation or groups): the same sums, in the forms XLA:CPU runs
  faster where its own convolution is slow (docs/performance.md):
  - to few channels, stride 1 (forward): one matmul and shifted sums;
  - from few channels, stride 1 (input gradient): the same;
  - strided (kernel gradient): one matmul per tap;
  - to few channels, stride 1 (kernel gradient): one matmul against the
    output gradient's shifted copies.
  Everything else is XLA's convolution and XLA's gradients."""
  del lhs_dilation, rhs_dilation, dimension_numbers, precision
  del preferred_element_type, feature_group_count
  x = jnp.pad(lhs, ((0, 0), *padding, (0, 0)))
  return _valid_conv(x, rhs, tuple(window_strides))
