"""Generators saved by junyanz/pytorch-CycleGAN-and-pix2pix -> a workdir that
`--mode=translate`, `--mode=test` and `--mode=evaluate` accept.

  python main.py --mode=import_torch --config=configs/horse2zebra.py --workdir=runs/official \
      --torch_checkpoint=latest_net_G_A.pth [--torch_checkpoint_b=latest_net_G_B.pth]

Official state dicts name parameters by their place in nn.Sequential
containers (`model.10.conv_block.1.weight`); `_resnet_names` and `_unet_names`
map each of those modules to the Flax module of models.py that plays its role.
Only generators with instance norm (the CycleGAN default) can be imported:
that is the only norm models.py has.
"""

import json
import os
import re

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cyclegan_jax import checkpoints
from cyclegan_jax import models
from cyclegan_jax import state as state_lib

# Buffers of InstanceNorm2d(track_running_stats=True), which PyTorch < 0.4 saved
# for every instance norm; the official test code deletes them too: the norm
# uses each image's own statistics.
_IGNORED_SUFFIXES = ('.running_mean', '.running_var', '.num_batches_tracked')


def _resnet_names(n_blocks: int, dropout: bool) -> dict[str, tuple[str, ...]]:
  """Official ResnetGenerator module -> Flax module path.

  model: 0 pad, 1 conv7, 2 norm, 3 relu, 4 conv (down), 5, 6, 7 conv (down),
  8, 9, then the blocks from 10, then per upsampling: convT, norm, relu; then
  pad, conv7, tanh. A block's conv_block: 0 pad, 1 conv, 2 norm, 3 relu,
  [dropout], pad, conv, norm.
  """
  second = 6 if dropout else 5
  names = {'model.1': ('Conv_0',), 'model.4': ('Conv_1',), 'model.7': ('Conv_2',)}
  for i in range(n_blocks):
    names[f'model.{10 + i}.conv_block.1'] = (f'ResnetBlock_{i}', 'Conv_0')
    names[f'model.{10 + i}.conv_block.{second}'] = (f'ResnetBlock_{i}', 'Conv_1')
  names[f'model.{10 + n_blocks}'] = ('ConvTranspose_0',)
  names[f'model.{13 + n_blocks}'] = ('ConvTranspose_1',)
  names[f'model.{17 + n_blocks}'] = ('Conv_3',)
  return names


def _unet_names(num_downs: int) -> dict[str, tuple[str, ...]]:
  """Official UnetGenerator module -> Flax module path.

  UnetGenerator.model is the outermost UnetSkipConnectionBlock; each block's
  `model` Sequential holds: outermost [down conv, inner block, relu, up convT,
  tanh]; middle [leaky relu, down conv, norm, inner block, relu, up convT,
  norm(, dropout)]; innermost [leaky relu, down conv, relu, up convT, norm].
  Our U-Net creates the down convs outermost first and the up convs innermost
  first.
  """
  names, prefix = {}, 'model.model.'
  for level in range(num_downs):
    outermost, innermost = level == 0, level == num_downs - 1
    names[prefix + ('0' if outermost else '1')] = (f'Conv_{level}',)
    names[prefix + ('3' if outermost or innermost else '5')] = (
        f'ConvTranspose_{num_downs - 1 - level}',)
    prefix += ('1' if outermost else '3') + '.model.'
  return names


def _module_names(generator) -> dict[str, tuple[str, ...]]:
  if isinstance(generator, models.UnetGenerator):
    return _unet_names(generator.num_downs)
  return _resnet_names(generator.n_blocks, generator.dropout)


def _looks_like(state: dict) -> str:
  """What generator a state dict holds, in config terms, for error messages."""
  blocks = {m.group(1) for k in state if (m := re.match(r'model\.(\d+)\.conv_block\.', k))}
  if 'model.1.weight' in state:
    dropout = any('.conv_block.6.' in k for k in state)
    return (f'resnet_{len(blocks)}blocks with ngf={state["model.1.weight"].shape[0]}'
            + (' and dropout' if dropout else ''))
  if 'model.model.0.weight' in state:
    downs = max(k.split('.').count('model') for k in state) - 1
    return f'unet_{2**downs} with ngf={state["model.model.0.weight"].shape[0]}'
  return 'no generator of the official layout (keys: ' + ', '.join(list(state)[:3]) + ', ...)'


def _expected(model_config) -> str:
  return (f'config.model.generator={model_config.generator!r}, '
          f'config.model.ngf={model_config.ngf}, config.model.dropout={model_config.dropout}')


def _torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ModuleNotFoundError('reading PyTorch checkpoints needs torch, which is not '
                              'installed: pip install torch') from None
  return torch


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A `.pth` state dict as float32 NumPy arrays, without `module.` prefixes
  (nn.DataParallel) and without instance-norm running statistics."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such file; expected a generator state dict saved by '
                            'pytorch-CycleGAN-and-pix2pix (e.g. latest_net_G_A.pth)')
  torch = _torch()
  try:
    loaded = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except  # Pickle, zip, truncation...
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    raise ValueError(f'{path}: cannot read this file as a PyTorch state dict ({reason})') from None
  if not isinstance(loaded, dict) or not all(torch.is_tensor(v) for v in loaded.values()):
    raise ValueError(f'{path}: holds a {type(loaded).__name__}, not a state dict of tensors; '
                     'expected what torch.save(net.state_dict(), path) writes')
  state = {k.removeprefix('module.'): v for k, v in loaded.items()}
  for key in state:
    # Batch norm has running statistics *and* a learnt scale: pix2pix models
    # trained with --norm batch; our generators have instance norm only.
    module = key.rsplit('.', 1)[0]
    if key.endswith('.running_mean') and module + '.weight' in state:
      raise ValueError(f'{path}: {module} is a batch norm (trained with --norm batch); only '
                       'generators with instance norm (--norm instance) can be imported')
  return {k: v.detach().to(torch.float32).numpy() for k, v in state.items()
          if not k.endswith(_IGNORED_SUFFIXES)}


def load_generator_params(path: str, model_config):
  """The Flax params of `models.create_generator(model_config)` from an
  official generator `.pth`; ValueError naming the file and the first key
  that does not fit."""
  if model_config.get('norm', 'instance') != 'instance':
    raise ValueError(f'config.model.norm={model_config.norm!r}: only generators with instance '
                     'norm can be imported')
  generator = models.create_generator(model_config)
  size = models.generator_multiple(generator)  # Parameter shapes do not depend on it.
  shapes = jax.eval_shape(generator.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, size, size, 3)))['params']
  shapes = flax.traverse_util.flatten_dict(shapes)
  state = read_state_dict(path)
  looks = f'the checkpoint looks like {_looks_like(state)} but {_expected(model_config)}'

  names = {f'{module}.{leaf}': (*flax_path, 'kernel' if leaf == 'weight' else 'bias')
           for module, flax_path in _module_names(generator).items()
           for leaf in ('weight', 'bias')}
  missing = [k for k in names if k not in state]
  unexpected = [k for k in state if k not in names]
  if missing or unexpected:
    first = f'no key {missing[0]}' if missing else f'unexpected key {unexpected[0]}'
    raise ValueError(f'{path}: {first} ({len(missing)} missing, {len(unexpected)} unexpected); '
                     f'{looks}')

  params = {}
  for key, flax_path in names.items():
    value = state[key]
    # Conv2d weights are (out, in, kh, kw) and Flax Conv kernels (kh, kw, in,
    # out). ConvTranspose2d weights are (in, out, kh, kw): the kernel of the
    # convolution it is the transpose of (out -> in), which is exactly what
    # nn.ConvTranspose(transpose_kernel=True) keeps as (kh, kw, out, in).
    # So both take the same permutation, and no spatial flip (tested).
    if value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)
    expected = shapes[flax_path].shape
    if value.shape != expected:
      torch_shape = expected if len(expected) == 1 else tuple(np.array(expected)[[3, 2, 0, 1]])
      raise ValueError(f'{path}: {key} has shape {tuple(state[key].shape)}, the config expects '
                       f'{tuple(int(d) for d in torch_shape)}; {looks}')
    params[flax_path] = jnp.asarray(value)
  return flax.traverse_util.unflatten_dict(params)


def _refuse_existing_checkpoints(workdir: str) -> None:
  directory = checkpoints.checkpoint_dir(workdir)
  if os.path.isdir(directory) and os.listdir(directory):
    raise FileExistsError(f'{workdir} already holds checkpoints ({directory}); import into a '
                          'new --workdir (importing never overwrites checkpoints)')


def import_torch_checkpoints(config, workdir: str, path_a: str, path_b: str | None = None):
  """Writes `workdir/config.json` and a step-0 checkpoint whose gen_ab is the
  official G_A (A->B) from `path_a` and gen_ba the official G_B (B->A) from
  `path_b`. Without `path_b` (a pretrained single-generator file such as
  horse2zebra.pth) gen_ba is a copy of gen_ab, and B->A results are not
  meaningful. The discriminators are freshly initialised: official test
  checkpoints hold none."""
  if config.model.get('kind', 'cyclegan') != 'cyclegan':
    raise ValueError(f'config.model.kind={config.model.kind!r}: --mode=import_torch writes '
                     'CycleGAN workdirs only')
  workdir = os.path.abspath(workdir)
  _refuse_existing_checkpoints(workdir)
  # Every file is read and checked before anything is written.
  params_ab = load_generator_params(path_a, config.model)
  params_ba = load_generator_params(path_b, config.model) if path_b else params_ab

  checkpoints.prepare_workdir(workdir)
  # A full train state, as training would create it (so that training this
  # workdir fine-tunes the imported generators from step 0); the schedule is
  # not stored, so any will do.
  image_shape = (config.data.crop_size, config.data.crop_size, 3)
  mesh = jax.make_mesh((jax.device_count(),), ('data',))
  state = state_lib.create_sharded_state(config, image_shape, mesh,
                                         optax.constant_schedule(config.train.lr))
  replicated = jax.NamedSharding(mesh, jax.P())
  state = state.replace(
      gen_ab=state.gen_ab.replace(params=jax.device_put(params_ab, replicated)),
      gen_ba=state.gen_ba.replace(params=jax.device_put(params_ba, replicated)))

  checkpoints.save_config(config, workdir)
  manager = checkpoints.create_manager(workdir, config.keep_checkpoints)
  checkpoints.save(manager, state)
  checkpoints.wait_until_finished(manager)
  sources = {'gen_ab': os.path.abspath(path_a),
             'gen_ba': os.path.abspath(path_b) if path_b else 'copy of gen_ab'}
  with open(os.path.join(workdir, 'torch_import.json'), 'w') as f:
    json.dump(sources, f, indent=2)

  count = f'{models.count_params(params_ab):,} parameters'
  print(f'gen_ab (AtoB, official G_A): {count} from {sources["gen_ab"]}', flush=True)
  if path_b:
    print(f'gen_ba (BtoA, official G_B): {count} from {sources["gen_ba"]}', flush=True)
  else:
    print('WARNING: no --torch_checkpoint_b, so gen_ba (BtoA) is a copy of the A->B generator: '
          'only AtoB translations are real; BtoA translations, reconstructions and B->A FID '
          'are not meaningful.', flush=True)
  print(f'Wrote {checkpoints.checkpoint_dir(workdir)}/0 (discriminators randomly initialised) '
        f'and {os.path.join(workdir, checkpoints.CONFIG_FILE)}; translate with: python main.py '
        f'--mode=translate --workdir={workdir} --input=DIR --output=DIR', flush=True)
