"""The package's layering: each module imports only its own layer or those below, nothing
imports in a circle, no mode imports another, the library never imports its analysis
tools, and tests import neither experiments nor other test modules."""

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = 'blockqnn_jax'
# Bottom to top. A module may import modules of its own layer (without a circle) or below.
LAYERS = (
    ('nsc', 'files', 'compilation', 'distributed', 'results', 'checkpoint', 'workdir',
     'reward', 'search_space', 'draw', 'summaries', 'models', 'data', 'streaming_input',
     'predictor'),
    ('strategies.base', 'strategies.qlearning', 'strategies.random_search',
     'strategies.evolution', 'strategies.local_search', 'strategies.driver', 'strategies',
     'strategies.predictor_guided'),
    ('training', 'training.steps', 'training.recipes', 'training.runners', 'training.loop',
     'training.inference'),
    ('child',),
    ('executors',),
    ('search', 'train_final', 'transfer'),
    ('check_config',),
    ('main',),
)
MODES = ('search', 'train_final', 'transfer')
RANK = {module: rank for rank, layer in enumerate(LAYERS) for module in layer}


def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
  parts = path.relative_to(root).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def is_module(dotted: str) -> bool:
  """Whether ``dotted`` names a module or package of this repository."""
  path = ROOT.joinpath(*dotted.split('.'))
  return path.with_suffix('.py').is_file() or (path / '__init__.py').is_file()


def imported(path: pathlib.Path) -> set[str]:
  """Every module ``path`` imports, at the top or inside a function, in full dotted form;
  ``from package import name`` counts as importing ``package.name``, and ``package`` too
  unless every name is one of its modules (a package's ``__init__`` may gather its
  modules, a registry, without a circle with a module that imports a sibling through the
  package); a relative import is resolved against the package ``path`` is in."""
  package = path.parent.relative_to(ROOT).parts
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = list(package[:len(package) - node.level + 1]) if node.level else []
      module = '.'.join(base + ([node.module] if node.module else []))
      members = {f'{module}.{alias.name}' for alias in node.names}
      names.update(members)
      if not all(is_module(member) for member in members):
        names.add(module)
  return names


def package_graph() -> dict[str, set[str]]:
  """Module -> the package's modules it imports (names without the 'blockqnn_jax.')."""
  paths = {module_name(p, ROOT / PACKAGE): p for p in (ROOT / PACKAGE).rglob('*.py')}
  return {module: {name[len(PACKAGE) + 1:] for name in imported(path)
                   if name.startswith(PACKAGE + '.') and name[len(PACKAGE) + 1:] in paths}
          for module, path in paths.items() if module}


def is_analysis(module: str) -> bool:
  return module == 'analysis' or module.startswith('analysis.')


def test_every_library_module_has_a_layer():
  unplaced = sorted(m for m in package_graph() if not is_analysis(m) and m not in RANK)
  assert not unplaced, f'add {unplaced} to a layer of LAYERS'


def test_no_module_imports_a_higher_layer_or_its_analysis_tools():
  upward = [(module, dep) for module, deps in package_graph().items() if module in RANK
            for dep in deps if is_analysis(dep) or RANK.get(dep, -1) > RANK[module]]
  assert not upward, upward


def test_no_import_circle():
  graph = package_graph()
  done, on_path = set(), []

  def visit(module):
    if module in on_path:
      pytest.fail(f'import circle: {" -> ".join(on_path[on_path.index(module):] + [module])}')
    if module in done:
      return
    on_path.append(module)
    for dep in sorted(graph[module]):
      visit(dep)
    on_path.pop()
    done.add(module)

  for module in sorted(graph):
    visit(module)


def test_no_mode_imports_another():
  graph = package_graph()
  assert not [(mode, dep) for mode in MODES for dep in graph[mode] if dep in MODES]


def test_tests_import_neither_experiments_nor_other_test_modules():
  offending = []
  for path in sorted(set((ROOT / 'tests').glob('*.py')) - {pathlib.Path(__file__)}):
    text = path.read_text()
    for name in imported(path):
      if name.split('.')[0] == 'experiments' or any(
          part.startswith('test_') for part in name.split('.')):
        offending.append((path.name, name))
    # Code run in subprocesses or written to config files is text, not an import.
    if 'from tests import test_' in text or 'import experiments' in text:
      offending.append((path.name, 'in a code string'))
  assert not offending, offending


SEARCH_THEN_LIST_MODULES = """
import sys
from blockqnn_jax import check_config, main, search
from blockqnn_jax.analysis import surrogate
from configs import quickstart
config = quickstart.get_config()
config.search.update(epsilon_schedule=((1.0, 1),), blocks_per_iteration=2)
check_config.check_config(config)
search.run_search(config, sys.argv[1], surrogate.synthetic_accuracy)
print([m for m in ('cv2', 'grain', 'simplejpeg') if m in sys.modules])
"""


def test_a_search_loads_neither_opencv_nor_grain_nor_simplejpeg(tmp_path):
  """Only transfer's streaming input pipeline needs them: the command line, the config
  check and the search import them for that mode alone."""
  loaded = subprocess.run(
      [sys.executable, '-c', SEARCH_THEN_LIST_MODULES, str(tmp_path)], cwd=ROOT,
      capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
  assert loaded == '[]'
