"""The package's layers (docs/architecture.md): every import of a
cyclegan_jax module, at any depth of a file, points to the same layer or a
lower one, the imports form no cycle, and an import inside a function is
only for a module that needs an optional extra (torch, jax2onnx)."""

import ast
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Lowest first. A package's name stands for every module in it.
LAYERS = (
    ('base', ('checkpoints', 'config_fields', 'console', 'deterministic_ops', 'distributed',
              'fid', 'image_io', 'image_pool',
              'inception', 'inception_weights', 'losses', 'memory', 'storage', 'tiled_io',
              'workdir_lock', 'xla_cpu_options')),
    ('ops', ('ops',)),
    ('nets', ('models', 'sb_models', 'generation', 'tiling')),
    ('data', ('data',)),
    ('families', ('families',)),
    ('config, state, inference', ('configuration', 'config_checks', 'sweeps', 'state',
                                  'train_step', 'inference')),
    ('services', ('curves', 'demo', 'evaluate', 'export', 'extract', 'quickstart_check',
                  'report', 'results_page', 'torch_import', 'torch_reference', 'translate',
                  'unsb_reference', 'video')),
    ('programs', ('train', 'benchmark', 'gpu_smoke', 'main.py')),
)
# Modules that need an optional extra: imported where they are used.
OPTIONAL = ('demo', 'export', 'torch_import', 'torch_reference', 'unsb_reference')


def _files() -> dict[str, str]:
  """{module name ('models', 'families.cut', 'main.py'): path}."""
  files = {'main.py': os.path.join(REPO, 'main.py')}
  root = os.path.join(REPO, 'cyclegan_jax')
  for folder, _, names in os.walk(root):
    for name in names:
      if name.endswith('.py'):
        rel = os.path.relpath(os.path.join(folder, name), root)[:-3].replace(os.sep, '.')
        files[rel.removesuffix('.__init__')] = os.path.join(folder, name)
  return files


def _layer_of(module: str) -> int:
  for i, (_, names) in enumerate(LAYERS):
    if module in names or module.split('.')[0] in names:
      return i
  raise AssertionError(f'{module} is in no layer of LAYERS (and docs/architecture.md): '
                       'place it there')


def _imports(path: str, modules) -> list[tuple[str, bool]]:
  """[(imported cyclegan_jax module, inside a function)] of a file."""
  tree = ast.parse(open(path, encoding='utf-8').read())
  found = []

  def visit(node, nested):
    for child in ast.iter_child_nodes(node):
      inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
      names = []
      if isinstance(child, ast.ImportFrom) and child.module and (
          child.module == 'cyclegan_jax' or child.module.startswith('cyclegan_jax.')):
        base = child.module.removeprefix('cyclegan_jax').lstrip('.')
        for alias in child.names:
          full = f'{base}.{alias.name}'.lstrip('.')
          names.append(full if full in modules else base)
      elif isinstance(child, ast.Import):
        names += [a.name.removeprefix('cyclegan_jax.') for a in child.names
                  if a.name.startswith('cyclegan_jax.')]
      found.extend((name, inner) for name in names if name)
      visit(child, inner)

  visit(tree, False)
  return found


def _graph():
  files = _files()
  return {module: _imports(path, files) for module, path in files.items()}


def _own(module: str, target: str) -> bool:
  return target == module or module.startswith(target + '.')  # A package's __init__.


def _misplaced(graph) -> list[str]:
  """Imports that point up a layer, or hide inside a function without need."""
  problems = []
  for module, imports in graph.items():
    for target, nested in imports:
      if _own(module, target):
        continue
      if _layer_of(target) > _layer_of(module):
        problems.append(f'{module} ({LAYERS[_layer_of(module)][0]}) imports {target} '
                        f'({LAYERS[_layer_of(target)][0]})')
      if nested and target not in OPTIONAL:
        problems.append(f'{module} imports {target} inside a function')
  return problems


def _cycle(graph) -> list[str] | None:
  edges = {m: sorted({t for t, _ in imports if not _own(m, t)}) for m, imports in graph.items()}
  state = {}

  def visit(module, path):
    state[module] = 'open'
    for target in edges.get(module, ()):
      if state.get(target) == 'open':
        return path[path.index(target):] + [target]
      if target not in state:
        found = visit(target, path + [target])
        if found:
          return found
    state[module] = 'done'
    return None

  for module in sorted(edges):
    if module not in state:
      found = visit(module, [module])
      if found:
        return found
  return None


def test_every_import_points_down_and_none_hides_in_a_function():
  assert not _misplaced(_graph()), _misplaced(_graph())


def test_no_import_cycle():
  cycle = _cycle(_graph())
  assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


def test_the_docs_describe_these_layers():
  """docs/architecture.md's table of layers names the same layers, in the
  same order, with the same modules."""
  text = open(os.path.join(REPO, 'docs', 'architecture.md'), encoding='utf-8').read()
  section = text.split('## Layers', 1)[1].split('\n## ', 1)[0]
  rows = [line for line in section.splitlines()
          if line.startswith('|') and re.search(r'`[^`]+`', line)]
  documented = [tuple(sorted(name.removesuffix('/').removesuffix('.py') if name != 'main.py'
                             else name for name in re.findall(r'`([^`]+)`', row.split('|')[2])))
                for row in rows]
  expected = [tuple(sorted(names)) for _, names in LAYERS]
  # The table lists the layers top (programs) first.
  assert documented == expected[::-1], (documented, expected[::-1])


def test_the_checks_find_what_they_look_for(tmp_path):
  """An upward import, a function-level one and a cycle are each found."""
  graph = {'losses': [('train', False)], 'train': [('losses', False)],
           'models': [('families', True)], 'families': [('models', False)]}
  assert _misplaced(graph) == ['losses (base) imports train (programs)',
                               'models (nets) imports families (families)',
                               'models imports families inside a function']
  assert _cycle(graph) == ['families', 'models', 'families']
  path = tmp_path / 'f.py'
  path.write_text('def f():\n  from cyclegan_jax import models\nfrom cyclegan_jax.ops import blur\n')
  assert _imports(str(path), {'ops.blur', 'models'}) == [('models', True), ('ops.blur', False)]
