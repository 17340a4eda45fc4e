"""Generators saved by junyanz/pytorch-CycleGAN-and-pix2pix -> a workdir that
`--mode=translate`, `--mode=test` and `--mode=evaluate` accept.

  CycleGAN (config.model.kind='cyclegan'): G_A, and G_B if you have it.
  python main.py --mode=import_torch --config=configs/horse2zebra.py --workdir=runs/official \
      --torch_checkpoint=latest_net_G_A.pth [--torch_checkpoint_b=latest_net_G_B.pth]

  pix2pix (config.model.kind='pix2pix'): its one generator, e.g. the
  published facades_label2photo.pth or a latest_net_G.pth.
  python main.py --mode=import_torch --config=configs/pix2pix_facades.py --workdir=runs/facades \
      --torch_checkpoint=latest_net_G.pth

  UNSB (config.model.kind='unsb'): the latest_net_G.pth of cyclomon/UNSB
  (`ResnetGenerator_ncsn`); its time conditioning is not in the file (both
  forms have the same parameters): config.model.unsb_time_conditioning says
  which to run ('official', as the reference runs it, by default).
  python main.py --mode=import_torch --config=configs/unsb_horse2zebra.py --workdir=runs/unsb \
      --torch_checkpoint=latest_net_G.pth

Official state dicts name parameters by their place in nn.Sequential
containers (`model.10.conv_block.1.weight`); `_resnet_modules` and
`_unet_modules` map each of those modules to the Flax module of models.py that
plays its role. Convolutions: weight -> kernel, bias -> bias. Batch norms
(`--norm batch`, the pix2pix default): weight -> scale, bias -> bias, and
their running_mean / running_var / num_batches_tracked are not imported:
models.BatchNorm normalises with the statistics of the batch it is given, at
test time too, which is what the official test.py does without `--eval`
(pix2pix's scripts do not pass it), one image at a time. Instance norms
(`--norm instance`, the CycleGAN default) have no parameters. The norm of the
checkpoint must be config.model.norm; `--norm none` generators cannot be
imported (models.py has no such norm).

A U-Net's state dict does not say whether it was trained with dropout (its
Dropout layers hold nothing); config.model.dropout and dropout_at_test decide
what translate does (pix2pix configs: dropout on at test time, as the official
test.py keeps it, with masks from a fixed key, so the outputs are like the
official ones only in distribution).

The workdir, and the `.pth` files too, may be on Cloud Storage (gs://...).
"""

import json
import os
import re

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from cyclegan_jax import checkpoints
from cyclegan_jax import families
from cyclegan_jax import models
from cyclegan_jax import sb_models
from cyclegan_jax import state as state_lib
from cyclegan_jax import storage

# Norm buffers. Batch norms' running statistics are not used (see above);
# InstanceNorm2d(track_running_stats=True), which PyTorch < 0.4 saved for
# every instance norm, has them too, and the official test code deletes them:
# the norm uses each image's own statistics.
_IGNORED_SUFFIXES = ('.running_mean', '.running_var', '.num_batches_tracked',
                     '.filt')  # UNSB's blur layers keep their fixed filters as buffers.

CONV, NORM, LINEAR = 'conv', 'norm', 'linear'


def _resnet_modules(n_blocks: int, dropout: bool) -> dict[str, tuple[tuple[str, ...], str]]:
  """Official ResnetGenerator module -> (Flax module path, CONV or NORM).

  model: 0 pad, 1 conv7, 2 norm, 3 relu, 4 conv (down), 5 norm, 6 relu, 7 conv
  (down), 8 norm, 9 relu, then the blocks from 10, then per upsampling: convT,
  norm, relu; then pad, conv7, tanh. A block's conv_block: 0 pad, 1 conv,
  2 norm, 3 relu, [dropout], pad, conv, norm.
  """
  second = 6 if dropout else 5
  modules = {'model.1': (('Conv_0',), CONV), 'model.2': (('BatchNorm_0',), NORM),
             'model.4': (('Conv_1',), CONV), 'model.5': (('BatchNorm_1',), NORM),
             'model.7': (('Conv_2',), CONV), 'model.8': (('BatchNorm_2',), NORM)}
  for i in range(n_blocks):
    block = f'model.{10 + i}.conv_block.'
    modules[block + '1'] = ((f'ResnetBlock_{i}', 'Conv_0'), CONV)
    modules[block + '2'] = ((f'ResnetBlock_{i}', 'BatchNorm_0'), NORM)
    modules[block + str(second)] = ((f'ResnetBlock_{i}', 'Conv_1'), CONV)
    modules[block + str(second + 1)] = ((f'ResnetBlock_{i}', 'BatchNorm_1'), NORM)
  modules[f'model.{10 + n_blocks}'] = (('ConvTranspose_0',), CONV)
  modules[f'model.{11 + n_blocks}'] = (('BatchNorm_3',), NORM)
  modules[f'model.{13 + n_blocks}'] = (('ConvTranspose_1',), CONV)
  modules[f'model.{14 + n_blocks}'] = (('BatchNorm_4',), NORM)
  modules[f'model.{17 + n_blocks}'] = (('Conv_3',), CONV)
  return modules


def _unet_modules(num_downs: int) -> dict[str, tuple[tuple[str, ...], str]]:
  """Official UnetGenerator module -> (Flax module path, CONV or NORM).

  UnetGenerator.model is the outermost UnetSkipConnectionBlock; each block's
  `model` Sequential holds: outermost [down conv, inner block, relu, up convT,
  tanh]; middle [leaky relu, down conv, norm, inner block, relu, up convT,
  norm(, dropout)]; innermost [leaky relu, down conv, relu, up convT, norm].
  Our U-Net creates the down convs and their norms outermost first, then the
  up convs and their norms innermost first: level i (0 = outermost) of n has
  Conv_i, ConvTranspose_{n-1-i}, down norm BatchNorm_{i-1} (0 < i < n-1) and
  up norm BatchNorm_{2n-3-i} (i > 0).
  """
  n, modules, prefix = num_downs, {}, 'model.model.'
  for level in range(n):
    outermost, innermost = level == 0, level == n - 1
    modules[prefix + ('0' if outermost else '1')] = ((f'Conv_{level}',), CONV)
    modules[prefix + ('3' if outermost or innermost else '5')] = (
        (f'ConvTranspose_{n - 1 - level}',), CONV)
    if not (outermost or innermost):
      modules[prefix + '2'] = ((f'BatchNorm_{level - 1}',), NORM)
      modules[prefix + '6'] = ((f'BatchNorm_{2 * n - 3 - level}',), NORM)
    if innermost:
      modules[prefix + '4'] = ((f'BatchNorm_{2 * n - 3 - level}',), NORM)
    prefix += ('1' if outermost else '3') + '.model.'
  return modules


def _conditional_resnet_modules(n_blocks: int, n_mlp: int) -> dict[str, tuple[tuple[str, ...], str]]:
  """UNSB's ResnetGenerator_ncsn module -> (Flax module path of
  sb_models.ConditionalResnetGenerator, role): its encoder in `model`, the
  blocks in `model_res`, the decoder in `model_upsample`, the z mapping in
  `z_transform` and the time MLP in `time_embed`."""
  convs = ['model.1', 'model.4', 'model.8', 'model_upsample.1', 'model_upsample.5',
           'model_upsample.9']
  modules = {name: ((f'Conv_{i}',), CONV) for i, name in enumerate(convs)}
  modules.update({f'z_transform.{1 + 2 * i}': ((f'z_transform_{i}',), LINEAR)
                  for i in range(1 + n_mlp)})
  modules.update({'time_embed.0': (('time_embed_0',), LINEAR),
                  'time_embed.2': (('time_embed_1',), LINEAR)})
  for i in range(n_blocks):
    block, prefix = f'ResnetBlock_{i}', f'model_res.{i}.'
    modules.update({prefix + 'conv_block.1': ((block, 'conv_0'), CONV),
                    prefix + 'conv_fin.2': ((block, 'conv_1'), CONV),
                    prefix + 'adaptive.style_net': ((block, 'adaptive'), LINEAR),
                    prefix + 'Dense_time': ((block, 'dense_time'), LINEAR),
                    prefix + 'style': ((block, 'style'), LINEAR)})
  return modules


def _module_names(generator) -> dict[str, tuple[tuple[str, ...], str]]:
  if isinstance(generator, models.UnetGenerator):
    return _unet_modules(generator.num_downs)
  if isinstance(generator, sb_models.ConditionalResnetGenerator):
    return _conditional_resnet_modules(generator.n_blocks, generator.n_mlp)
  return _resnet_modules(generator.n_blocks, generator.dropout)


def parameter_names(generator, flax_shapes) -> dict[str, tuple[str, ...]]:
  """Official state dict key -> flattened Flax parameter path, for the
  parameters `flax_shapes` (flattened) has: a convolution's bias only where
  models.py gives it one (not before a batch norm), norms only where they have
  parameters (batch norm)."""
  names = {}
  for module, (flax_path, role) in _module_names(generator).items():
    leaves = ({'weight': 'scale', 'bias': 'bias'} if role == NORM
              else {'weight': 'kernel', 'bias': 'bias'})
    for torch_leaf, flax_leaf in leaves.items():
      if (*flax_path, flax_leaf) in flax_shapes:
        names[f'{module}.{torch_leaf}'] = (*flax_path, flax_leaf)
  return names


def checkpoint_norm(state: dict) -> str:
  """The `--norm` a state dict was trained with: 'batch' (a norm with a
  weight: BatchNorm2d(affine=True)), 'instance' (norms without parameters,
  convolutions with biases) or 'none' (neither: the official `--norm none`
  also drops the biases)."""
  if any(k.endswith('.weight') and v.ndim == 1 for k, v in state.items()):
    return 'batch'
  if 'model.1.weight' in state and 'model.1.bias' not in state:
    return 'none'
  if 'model.model.0.weight' in state and 'model.model.0.bias' not in state:
    return 'none'
  return 'instance'


def _looks_like(state: dict) -> str:
  """What generator a state dict holds, in config terms, for error messages."""
  blocks = {m.group(1) for k in state if (m := re.match(r'model\.(\d+)\.conv_block\.', k))}
  norm = f'{checkpoint_norm(state)} norm'
  if 'model_res.0.conv_block.1.weight' in state:
    unsb_blocks = {k.split('.')[1] for k in state if k.startswith('model_res.')}
    mlp = sum(1 for k in state if re.fullmatch(r'z_transform\.\d+\.weight', k)) - 1
    return (f'a UNSB generator (resnet_{len(unsb_blocks)}blocks conditioned on t and z) with '
            f'ngf={state["model.1.weight"].shape[0]}, unsb_n_mlp={mlp}, {norm}')
  if 'model.1.weight' in state:
    # conv_block.6 is the second conv with dropout, the first block's second
    # norm without; a conv weight is 4-D.
    dropout = any(k.endswith('.conv_block.6.weight') and state[k].ndim == 4 for k in state)
    return (f'resnet_{len(blocks)}blocks with ngf={state["model.1.weight"].shape[0]}, {norm}'
            + (' and dropout' if dropout else ''))
  if 'model.model.0.weight' in state:
    downs = max(k.split('.').count('model') for k in state) - 1
    return f'unet_{2**downs} with ngf={state["model.model.0.weight"].shape[0]}, {norm}'
  return 'no generator of the official layout (keys: ' + ', '.join(list(state)[:3]) + ', ...)'


def _expected(model_config) -> str:
  return (f'config.model.generator={model_config.generator!r}, '
          f'config.model.ngf={model_config.ngf}, '
          f'config.model.norm={model_config.get("norm", "instance")!r}, '
          f'config.model.dropout={model_config.dropout}')


def _torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ModuleNotFoundError('reading PyTorch checkpoints needs torch, which is not '
                              'installed: pip install torch') from None
  return torch


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A `.pth` state dict as float32 NumPy arrays, without `module.` prefixes
  (nn.DataParallel) and without norms' running statistics."""
  if not storage.isfile(path):
    raise FileNotFoundError(f'{path}: no such file; expected a generator state dict saved by '
                            'pytorch-CycleGAN-and-pix2pix (e.g. latest_net_G_A.pth)')
  torch = _torch()
  try:
    with storage.local_file(path) as local:  # torch.load reads a local copy of a gs:// file.
      loaded = torch.load(local, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except  # Pickle, zip, truncation...
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    raise ValueError(f'{path}: cannot read this file as a PyTorch state dict ({reason})') from None
  if not isinstance(loaded, dict) or not all(torch.is_tensor(v) for v in loaded.values()):
    raise ValueError(f'{path}: holds a {type(loaded).__name__}, not a state dict of tensors; '
                     'expected what torch.save(net.state_dict(), path) writes')
  state = {k.removeprefix('module.'): v for k, v in loaded.items()}
  return {k: v.detach().to(torch.float32).numpy() for k, v in state.items()
          if not k.endswith(_IGNORED_SUFFIXES)}


def load_generator_params(path: str, model_config, network: str | None = None):
  """The Flax params of generator `network` of the family's `create_generators(
  model_config)` (gen_ab, gen_ba or pix2pix's gen; default the first) from
  an official generator `.pth`; ValueError naming the file and the first key
  that does not fit (channels included), or the norm, if it is not
  config.model.norm."""
  norm = model_config.norm
  family = families.for_model(model_config)
  # Names an unknown norm or generator.
  generators = family.create_generators(model_config)
  network = network or next(iter(generators))
  generator = generators[network]
  size = models.generator_multiple(generator)  # Parameter shapes do not depend on it.
  channels, _ = family.generator_channels(model_config, network)
  image = jnp.zeros((1, size, size, channels))
  if isinstance(generator, sb_models.ConditionalResnetGenerator):  # One step: G(x, t, z).
    shapes = jax.eval_shape(generator.init, jax.random.PRNGKey(0), image,
                            jnp.zeros((1,), jnp.int32), jnp.zeros((1, 4 * generator.ngf)))
  else:
    shapes = jax.eval_shape(generator.init, jax.random.PRNGKey(0), image)
  shapes = shapes['params']
  shapes = flax.traverse_util.flatten_dict(shapes)
  state = read_state_dict(path)
  looks = f'the checkpoint looks like {_looks_like(state)} but {_expected(model_config)}'

  found = checkpoint_norm(state)
  if found != norm:
    if found == 'none':
      fix = 'models.py has no generator without norm layers'
    else:
      fix = (f'import it with --config.model.norm={found}'
             + (' (or a pix2pix config)' if found == 'batch' else ''))
    raise ValueError(f'{path}: this generator was trained with --norm {found} but '
                     f'config.model.norm={norm!r}; {fix} ({looks})')

  names = parameter_names(generator, shapes)
  # Every Flax parameter has exactly one official name (else models.py and
  # this mapping disagree: a bug, not a bad file).
  assert sorted(names.values()) == sorted(shapes), set(shapes) ^ set(names.values())
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
    # Batch norm weight and bias are (features,), as scale and bias. Linear
    # weights are (out, in), Dense kernels (in, out).
    if value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)
    elif value.ndim == 2:
      value = value.T
    expected = shapes[flax_path].shape
    if value.shape != expected:
      torch_shape = (tuple(np.array(expected)[[3, 2, 0, 1]]) if len(expected) == 4
                     else expected[::-1])
      raise ValueError(f'{path}: {key} has shape {tuple(state[key].shape)}, the config expects '
                       f'{tuple(int(d) for d in torch_shape)}; {looks}')
    params[flax_path] = jnp.asarray(value)
  return flax.traverse_util.unflatten_dict(params)


def _refuse_existing_checkpoints(workdir: str) -> None:
  directory = checkpoints.checkpoint_dir(workdir)
  if storage.isdir(directory) and storage.listdir(directory):
    raise FileExistsError(f'{workdir} already holds checkpoints ({directory}); import into a '
                          'new --workdir (importing never overwrites checkpoints)')


def _batch_norm_note(params, generators: str) -> str | None:
  flat = flax.traverse_util.flatten_dict(params)
  count = sum(path[-1] == 'scale' for path in flat)
  if not count:
    return None
  return (f'Batch norm: the weight and bias of the {count} BatchNorm2d of {generators} were '
          'imported, their '
          'running_mean/running_var were not: like the official test.py without --eval, the '
          'generator normalises with the statistics of the batch it is given (in '
          '--mode=translate, each image\'s own).')


def import_torch_checkpoints(config, workdir: str, path_a: str, path_b: str | None = None):
  """Writes `workdir/config.json` and a step-0 checkpoint holding the
  official generator(s), for config.model.kind:

  - 'cyclegan': gen_ab is the official G_A (A->B) from `path_a` and gen_ba the
    official G_B (B->A) from `path_b`. Without `path_b` (a pretrained
    single-generator file such as horse2zebra.pth) gen_ba is a copy of gen_ab,
    and B->A results are not meaningful.
  - 'pix2pix': gen is the official G (latest_net_G.pth, or a published model
    such as facades_label2photo.pth), translating config.data.direction;
    `path_b` is refused (pix2pix has one generator).

  The discriminators are freshly initialised: official test checkpoints hold
  none. Nothing is written unless every file fits the config."""
  family = families.get(config)
  conditional = isinstance(next(iter(family.create_generators(config.model).values())),
                           sb_models.ConditionalResnetGenerator)
  if (config.model.antialias or config.model.antialias_up) and not conditional:
    raise ValueError('config.model.antialias: expected False for --mode=import_torch (it reads '
                     'the official CycleGAN/pix2pix generators; antialiased ones, as CUT '
                     'trains, are not supported)')
  # One generator (pix2pix: the official G) or two (CycleGAN: G_A, G_B).
  networks = tuple(family.create_generators(config.model))
  single = len(networks) == 1
  if single and path_b:
    raise ValueError(f'--torch_checkpoint_b={path_b}: a {family.KIND} model has one generator '
                     '(latest_net_G.pth); pass it as --torch_checkpoint only')
  workdir = storage.absolute(workdir)
  _refuse_existing_checkpoints(workdir)
  # Every file is read and checked before anything is written.
  if not (single or path_b) and config.model.input_nc != config.model.output_nc:
    raise ValueError(f'--torch_checkpoint={path_a}: config.model.input_nc='
                     f'{config.model.input_nc} and output_nc={config.model.output_nc} differ, '
                     'so the B->A generator cannot be a copy of the A->B one; pass its '
                     'checkpoint too (--torch_checkpoint_b=..._net_G_B.pth)')
  params_ab = load_generator_params(path_a, config.model, networks[0])
  params_ba = load_generator_params(path_b, config.model, 'gen_ba') if path_b else params_ab

  checkpoints.prepare_workdir(workdir)
  # A full train state, as training would create it (so that training this
  # workdir fine-tunes the imported generators from step 0); the schedule is
  # not stored, so any will do.
  image_shape = (config.data.crop_size, config.data.crop_size)
  mesh = jax.make_mesh((1, jax.device_count()), ('runs', 'data'))
  state = state_lib.without_runs_axis(state_lib.create_sharded_state(
      [config], image_shape, mesh, steps_per_epoch=1), mesh)
  replicated = jax.NamedSharding(mesh, jax.P())
  put = lambda params: jax.device_put(params, replicated)
  if single:
    state = state.replace(**{networks[0]: getattr(state, networks[0]).replace(
        params=put(params_ab))})
    sources = {networks[0]: storage.absolute(path_a)}
  else:
    state = state.replace(gen_ab=state.gen_ab.replace(params=put(params_ab)),
                          gen_ba=state.gen_ba.replace(params=put(params_ba)))
    sources = {'gen_ab': storage.absolute(path_a),
               'gen_ba': storage.absolute(path_b) if path_b else 'copy of gen_ab'}

  checkpoints.save_config(config, workdir)
  manager = checkpoints.create_manager(workdir, config.keep_checkpoints)
  checkpoints.save(manager, state)
  checkpoints.wait_until_finished(manager)
  storage.write_text_atomically(storage.join(workdir, 'torch_import.json'),
                                json.dumps(sources, indent=2))

  count = f'{models.count_params(params_ab):,} parameters'
  if single:
    (direction, network), = family.directions(config)
    print(f'{network} ({direction}, official G): {count} from {sources[network]}', flush=True)
    if conditional:
      print('Time conditioning: config.model.unsb_time_conditioning='
            f'{config.model.unsb_time_conditioning!r} (a checkpoint does not say; the '
            "reference's own generator is 'official').", flush=True)
    generator = models.create_generator(config.model)
    if models.has_dropout_layers(generator) and generator.dropout_at_test:
      print('Dropout stays on when translating (config.model.dropout_at_test, as in the official '
            'test.py), with masks from a fixed key: outputs match the official ones in '
            'distribution, not pixel for pixel.', flush=True)
  else:
    print(f'gen_ab (AtoB, official G_A): {count} from {sources["gen_ab"]}', flush=True)
    if path_b:
      print(f'gen_ba (BtoA, official G_B): {count} from {sources["gen_ba"]}', flush=True)
    else:
      print('WARNING: no --torch_checkpoint_b, so gen_ba (BtoA) is a copy of the A->B '
            'generator: only AtoB translations are real; BtoA translations, reconstructions '
            'and B->A FID are not meaningful.', flush=True)
  note = _batch_norm_note(params_ab, 'each generator' if path_b else 'the generator')
  if note:
    print(note, flush=True)
  print(f'Wrote {checkpoints.checkpoint_dir(workdir)}/0 (discriminator'
        f'{"" if single else "s"} randomly initialised) and '
        f'{os.path.join(workdir, checkpoints.CONFIG_FILE)}; translate with: python main.py '
        f'--mode=translate --workdir={workdir} --input=DIR --output=DIR', flush=True)
