"""Export a workdir's generators as ONNX files that run without JAX.

The exporter is jax2onnx: it converts the JAX program of the generator itself
(the same jaxpr `translate` compiles), so what ONNX Runtime computes is what
translate computes, float rounding apart (tests/test_export.py checks 1e-4).

Each file takes and returns NHWC float32 images in [-1, 1] with a dynamic
batch, height and width; height and width must be a multiple of the
generator's downsampling factor (models.generator_multiple), which a JSON file
beside the .onnx states with everything else a caller needs.

The workdir and the output folder may be on Cloud Storage (gs://...): the
files are written through storage, each object whole.
"""

import contextlib
import io
import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from cyclegan_jax import families
from cyclegan_jax import generation
from cyclegan_jax import inference
from cyclegan_jax import models
from cyclegan_jax import sb_models
from cyclegan_jax import storage
from cyclegan_jax import tiling

INPUT_NAME = 'image'
OUTPUT_NAME = 'translated'
DIRECTIONS = ('AtoB', 'BtoA', 'both')


def _onnx_modules():
  """(jax2onnx, onnx), or an ImportError (one line) naming the extra."""
  try:
    # jax2onnx logs a warning and a traceback for each plugin it cannot load
    # (dm_pix's, which this program never uses) when first imported, and
    # onnx_ir one for each shape constant it writes.
    for name in ('jax2onnx', 'onnx_ir'):
      logging.getLogger(name).setLevel(logging.ERROR)
    import jax2onnx  # pylint: disable=import-outside-toplevel
    import onnx  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(f'ONNX export needs the optional extra "export" ({e.name} is missing): '
                      'pip install -e ".[export]"') from None
  return jax2onnx, onnx


def exportable_generator(model_config, network: str, dropout_at_test: bool | None = None):
  """The generator of `network` as export builds it: float32 (ONNX Runtime on
  CPU has no bfloat16 convolution), no remat (an inference graph keeps no
  activations for a backward pass); `dropout_at_test=False` turns off the
  test-time dropout that export_generator refuses."""
  config = model_config.copy_and_resolve_references()
  with config.unlocked():
    config.dtype = 'float32'
    config.remat = False
    if dropout_at_test is not None:
      config.dropout_at_test = dropout_at_test
  return families.for_model(config).create_generators(config)[network]


def _min_blocks(generator) -> int:
  # The resnet's reflection padding by 1 at a quarter of the input's size
  # needs that size to be at least 2: inputs of at least 8x8.
  return 2 if isinstance(generator, (models.ResnetGenerator,
                                     sb_models.ConditionalResnetGenerator)) else 1


def _with_image_input(model, onnx, multiple: int, channels: int, batch='batch',
                      inputs=(), outputs=(OUTPUT_NAME,), image_output=True) -> int | None:
  """jax2onnx exports a program taking (batch, H/m, m, W/m, m, C), the form
  in which "H and W are multiples of m" is a shape JAX can reason about;
  this puts a Reshape from an ordinary (batch, H, W, C) input in front of it,
  in place, and names the graph's other inputs `inputs` and its outputs
  `outputs`. With `image_output` the first output is an image, whose
  dimensions it names alike; returns its channels (else None)."""
  helper, graph = onnx.helper, model.graph
  blocks_input = graph.input[0].name
  out_channels = (graph.output[0].type.tensor_type.shape.dim[3].dim_value
                  if image_output else None)
  renamed = {old.name: new for old, new in zip(graph.input[1:], inputs)}
  renamed.update({old.name: new for old, new in zip(graph.output, outputs)})
  constant = lambda name, values: onnx.numpy_helper.from_array(np.array(values, np.int64), name)
  graph.initializer.extend([constant('image_batch_rows', [0, -1]),  # Reshape: 0 keeps, -1 infers.
                            constant('image_multiple', [multiple]),
                            constant('image_multiple_channels', [multiple, channels])])
  reshape = [  # blocks = image.reshape(batch, -1, m, W / m, m, C)
      helper.make_node('Shape', [INPUT_NAME], ['image_width'], start=2, end=3),
      helper.make_node('Div', ['image_width', 'image_multiple'], ['image_columns']),
      helper.make_node('Concat', ['image_batch_rows', 'image_multiple', 'image_columns',
                                  'image_multiple_channels'], ['image_blocks_shape'], axis=0),
      helper.make_node('Reshape', [INPUT_NAME, 'image_blocks_shape'], [blocks_input]),
  ]
  for node in reversed(reshape):
    graph.node.insert(0, node)
  for node in graph.node:
    node.input[:] = [renamed.get(name, name) for name in node.input]
    node.output[:] = [renamed.get(name, name) for name in node.output]
  others_in = list(graph.input[1:])
  others_out = list(graph.output[1:] if image_output else graph.output)
  for info in others_in + others_out:
    info.name = renamed[info.name]
  dims = [batch, 'height', 'width']
  del graph.input[:], graph.output[:]
  graph.input.append(helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT,
                                                   dims + [channels]))
  graph.input.extend(others_in)
  if image_output:
    graph.output.append(helper.make_tensor_value_info(outputs[0], onnx.TensorProto.FLOAT,
                                                      dims + [out_channels]))
  graph.output.extend(others_out)
  return out_channels


def _drop_unused_initializers(graph) -> None:
  # jax2onnx leaves a few constants it folded away; ONNX Runtime warns about
  # each when it loads the file.
  used = {name for node in graph.node for name in node.input}
  kept = [init for init in graph.initializer if init.name in used]
  del graph.initializer[:]
  graph.initializer.extend(kept)


def export_generator(generator, params, path: str, channels: int) -> dict:
  """Writes the ONNX file of `generator` applied to `params` (test mode) to
  `path`, atomically. Test-time dropout is refused: its masks come from JAX's
  random generator for each input shape, which an ONNX graph of dynamic size
  cannot hold (jax2onnx would write ONNX's own random ops). Returns what a
  caller needs to know of its input and output (the JSON file beside it holds
  this)."""
  _onnx_modules()
  if models.has_dropout_layers(generator) and generator.dropout_at_test:
    raise ValueError('this generator applies dropout at test time (config.model.dropout_at_test'
                     '=True, the official pix2pix default) with masks that JAX draws for '
                     'each input size, which an ONNX file of dynamic size cannot reproduce; '
                     'export it without test-time dropout (as the official test.py --eval '
                     'runs it) with --dropout_at_test=false, or translate with '
                     '--mode=translate')
  if generation.draws_noise(generator):
    return export_step(generator, params, path, channels)
  multiple = models.generator_multiple(generator)

  def on_blocks(blocks):  # (batch, H/m, m, W/m, m, C) -> G(image)
    return generation.generate(generator, params, _image_of(blocks, multiple))

  least = _min_blocks(generator)
  model, out_channels = _convert(on_blocks, [], generator, channels, 'b', path)
  common = {'layout': 'NHWC', 'dtype': 'float32', 'value_range': [-1.0, 1.0]}
  return {'input': {'name': INPUT_NAME, 'channels': channels, **common,
                    'size_multiple': multiple, 'min_size': least * multiple},
          'output': {'name': OUTPUT_NAME, 'channels': out_channels, **common},
          'opset': model.opset_import[0].version}


STEP_INPUTS = ('t', 'z')
STEP_OUTPUT = 'predicted'


def export_step(generator, params, path: str, channels: int) -> dict:
  """A generator that translates in steps from noise (UNSB's): one step,
  G(image, t, z) -> `predicted` (its prediction of the translation), inputs
  the image x_t, `t` (batch,) int32 step indices and `z` (batch, z_features)
  float32. The steps between (the bridge and its noise) are the caller's:
  the JSON beside the file holds the time grid and tau they need, and
  docs/scripts/unsb_onnx.py runs them with ONNX Runtime."""
  multiple = models.generator_multiple(generator)
  width = 4 * generator.ngf

  def on_blocks(blocks, t, z):
    return generator.apply({'params': params}, _image_of(blocks, multiple), t, z)

  def step_inputs(batch):
    return [jax.ShapeDtypeStruct((batch,), jnp.int32),
            jax.ShapeDtypeStruct((batch, width), jnp.float32)]

  least = _min_blocks(generator)
  model, out_channels = _convert(on_blocks, step_inputs, generator, channels, 'b', path,
                                 STEP_INPUTS, (STEP_OUTPUT,))
  common = {'layout': 'NHWC', 'dtype': 'float32', 'value_range': [-1.0, 1.0]}
  num_timesteps = generator.num_timesteps
  return {'input': {'name': INPUT_NAME, 'channels': channels, **common,
                    'size_multiple': multiple, 'min_size': least * multiple},
          'output': {'name': STEP_OUTPUT, 'channels': out_channels, **common},
          'steps': {'inputs': list(STEP_INPUTS), 'z_features': width,
                    'num_timesteps': num_timesteps, 'nfe': generator.nfe or num_timesteps,
                    'times': [float(v) for v in sb_models.time_grid(num_timesteps)],
                    'tau': float(generator.tau)},
          'opset': model.opset_import[0].version}


def _image_of(blocks, multiple: int):
  batch, rows, _, columns, _, c = blocks.shape
  return blocks.reshape(batch, rows * multiple, columns * multiple, c)


def _convert(program, other_inputs, generator, channels: int, batch: str, path: str,
             inputs=(), outputs=(OUTPUT_NAME,), image_output=True):
  """`program` (an image in blocks, then `other_inputs`) as an ONNX file at
  `path`, written atomically, taking an ordinary NHWC image (batch `batch`:
  'b' dynamic, '1' one image). `other_inputs` may be a function of the
  batch dimension (inputs with the image's batch). Returns (the model, its
  image output's channels: None without `image_output`)."""
  jax2onnx, onnx = _onnx_modules()
  multiple = models.generator_multiple(generator)
  least = _min_blocks(generator)
  shape = jax.export.symbolic_shape(f'{batch}, h, {multiple}, w, {multiple}, {channels}',
                                    constraints=(f'h >= {least}', f'w >= {least}'))
  if callable(other_inputs):
    other_inputs = other_inputs(shape[0])
  with contextlib.redirect_stdout(io.StringIO()):  # jax2onnx prints debugging lines.
    model = jax2onnx.to_onnx(program, [jax.ShapeDtypeStruct(shape, jnp.float32), *other_inputs],
                             model_name=type(generator).__name__)
  out_channels = _with_image_input(model, onnx, multiple, channels,
                                   'batch' if batch == 'b' else int(batch), inputs, outputs,
                                   image_output)
  _drop_unused_initializers(model.graph)
  onnx.checker.check_model(model)
  storage.write_bytes_atomically(path, model.SerializeToString())
  return model, out_channels


# The tile program's inputs after the image and outputs after the translation,
# and the statistics program's outputs (docs/export.md, "Images of any size").
TILE_INPUTS = ('mean', 'var', 'core')
TILE_OUTPUTS = ('core_count', 'core_mean', 'core_m2')
STATISTICS_OUTPUTS = ('mean', 'var')


def export_tile_programs(generator, params, path_prefix: str, channels: int) -> dict:
  """Writes the two files that translate an image of any size tile by tile
  with ONNX Runtime, with the whole image's normalisation statistics
  (tiling.py's method, driven from outside):

  - `<prefix>.tile.onnx`: one window (1, H, W, C) with every normalisation
    layer's statistics given (`mean`, `var`: the layers' channels
    concatenated) and the window's core (`core`: y0, y1, x0, x1, int32) ->
    the window's translation and each layer's input measured over the core
    (`core_count` per layer, `core_mean` and `core_m2` concatenated);
  - `<prefix>.statistics.onnx`: an image (a thumbnail) -> every layer's
    `mean` and `var` of its own untiled translation, where passes start.

  Returns the "tiles" block of the JSON beside them (test-time dropout is
  refused by export_generator before this runs)."""
  layers = tiling.norm_layers(generator, params, channels)
  total = sum(c for c, _ in layers)
  vector = jax.ShapeDtypeStruct((total,), jnp.float32)
  multiple = models.generator_multiple(generator)

  def tile_program(blocks, mean, var, core):
    return tiling.window_with_statistics(generator, params, layers, _image_of(blocks, multiple),
                                         mean, var, core)

  def statistics_program(blocks):
    return tiling.own_statistics(generator, params, _image_of(blocks, multiple))

  tile_path, statistics_path = path_prefix + '.tile.onnx', path_prefix + '.statistics.onnx'
  _convert(tile_program, [vector, vector, jax.ShapeDtypeStruct((4,), jnp.int32)], generator,
           channels, '1', tile_path, TILE_INPUTS, (OUTPUT_NAME, *TILE_OUTPUTS))
  _convert(statistics_program, [], generator, channels, '1', statistics_path, (),
           STATISTICS_OUTPUTS, image_output=False)
  return {'file': os.path.basename(tile_path),
          'statistics_file': os.path.basename(statistics_path),
          'norm_layers': [{'channels': c, 'downsampling': f} for c, f in layers],
          'receptive_radius': models.receptive_radius(generator),
          'halo': tiling.halo(generator), 'core_multiple': tiling.core_multiple(generator),
          'min_tile': tiling.min_tile(generator), 'thumbnail_size': tiling.THUMBNAIL_SIZE}


def _check_output_dir(output_dir: str) -> None:
  if storage.exists(output_dir) and not storage.isdir(output_dir):
    raise FileExistsError(f'--output={output_dir} is a file; expected a folder (it is '
                          'created if missing)')
  try:
    storage.makedirs(output_dir)
  except OSError as e:
    raise OSError(f'--output={output_dir}: cannot create this folder ({e.strerror or e})') from e
  storage.check_writable(output_dir, f'--output={output_dir}')


def export_workdir(workdir: str, output_dir: str, direction: str | None = None,
                   step: int | None = None, dropout_at_test: bool | None = None,
                   run: str | None = None, tiles: bool = False) -> list[str]:
  """Writes `output_dir/<direction>.onnx` and `<direction>.json` for each
  generator `direction` names (None or 'both': every direction the model has;
  CycleGAN: AtoB and BtoA, pix2pix: the one it was trained for). Returns the
  .onnx paths. `run`: a sweep's run (by name or index). `tiles`: also each
  direction's tile and statistics programs (export_tile_programs)."""
  _onnx_modules()  # The missing extra is named before anything else is done.
  config = inference.load_config(workdir, run)
  if direction not in (None, *DIRECTIONS):
    raise ValueError(f'--direction={direction!r}: expected AtoB, BtoA or both')
  inference.wanted(config, direction or inference.ALL)  # Before any work.
  _check_output_dir(output_dir)
  restored = inference.restore(workdir, direction or inference.ALL, step, config, run)
  if tiles and any(generation.draws_noise(g.module) for g in restored.generators):
    raise ValueError('--export_tiles: this model translates in steps from noise (UNSB), '
                     'which has no tiled translation yet; export it without --export_tiles')
  written = []
  for g in restored.generators:
    generator = exportable_generator(config.model, g.network, dropout_at_test)
    path = os.path.join(output_dir, f'{g.direction}.onnx')
    spec = export_generator(generator, g.params, path, g.in_channels)
    if tiles:
      spec['tiles'] = export_tile_programs(generator, g.params,
                                           os.path.join(output_dir, g.direction), g.in_channels)
    info = {
        'file': os.path.basename(path), 'direction': g.direction, 'network': g.network,
        'step': restored.step, 'workdir': storage.absolute(workdir), **spec,
        'norm': config.model.norm,
        'batch_statistics': config.model.norm == 'batch',
        'dropout_at_test': False,
        'compute_dtype': 'float32',  # Whatever config.model.dtype trained it.
        'exporter': f'jax2onnx {_version("jax2onnx")}',
        'config': config.to_dict(),
    }
    storage.write_text_atomically(os.path.join(output_dir, f'{g.direction}.json'),
                                  json.dumps(info, indent=2, default=str))
    written.append(path)
    if tiles:
      written += [os.path.join(output_dir, spec['tiles'][key]) for key in ('file',
                                                                           'statistics_file')]
  return written


def _version(package: str) -> str:
  import importlib.metadata  # pylint: disable=import-outside-toplevel
  return importlib.metadata.version(package)


class OnnxRuntimeRunner:
  """`generator` on `images`, exported by export_generator into a temporary
  file and run by ONNX Runtime on CPU: the benchmark's `--compare=onnx`."""

  def __init__(self, generator, params, images: np.ndarray):
    try:
      import onnxruntime  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise ImportError('--compare=onnx needs the optional extra "export" (onnxruntime is '
                        'missing): pip install -e ".[export]"') from None
    import tempfile  # pylint: disable=import-outside-toplevel
    with tempfile.TemporaryDirectory() as folder:
      path = os.path.join(folder, 'generator.onnx')
      export_generator(generator, params, path, images.shape[-1])
      self.session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    self.images = np.asarray(images, np.float32)
    self.version = onnxruntime.__version__
    self.device_name = 'CPU (CPUExecutionProvider)'

  def run(self):
    return self.session.run(None, {INPUT_NAME: self.images})[0]
