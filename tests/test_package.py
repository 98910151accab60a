"""``pip install .`` into a fresh virtualenv: the ``blockqnn`` command, shipped configs by
name and any config file by path, from a directory outside the repository.

The virtualenv sees the system's packages and this pip installs into it, building without
isolation, so nothing is downloaded (some 9 s of CPU time, most of it three commands
importing JAX).
"""

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tomllib

import pytest
import setuptools

ROOT = pathlib.Path(__file__).resolve().parents[1]
# What `pip install .` reads: the package, the configs and what pyproject.toml names.
SOURCES = ('pyproject.toml', 'MANIFEST.in', 'README.md', 'requirements.txt',
           'requirements-ray.txt', 'requirements-cuda.txt', 'requirements-test.txt',
           'blockqnn_jax', 'configs')
CHECK_ERROR = 'error: config.early_stop.epochs=-2 is not allowed: an integer >= 1'
USER_CONFIG = '''
from configs import quickstart


def get_config():
  config = quickstart.get_config()
  config.early_stop.epochs = -3
  return config
'''


def can_build_offline() -> bool:
  """Without build isolation setuptools builds a wheel only with the wheel package, or
  from version 70.1 on, where bdist_wheel is its own."""
  version = tuple(int(part) for part in setuptools.__version__.split('.')[:2])
  return version >= (70, 1) or importlib.util.find_spec('wheel') is not None


@pytest.mark.skipif(not can_build_offline(),
                    reason='building offline needs the wheel package or setuptools >= 70.1')
def test_pip_install_gives_the_blockqnn_command_with_its_configs(tmp_path):
  source, venv, elsewhere = tmp_path / 'source', tmp_path / 'venv', tmp_path / 'elsewhere'
  copy_sources(source)
  subprocess.run([sys.executable, '-m', 'venv', '--system-site-packages', '--without-pip',
                  str(venv)], check=True)
  subprocess.run([sys.executable, '-m', 'pip', '--python', str(venv / 'bin' / 'python'),
                  'install', '-q', '--no-deps', '--no-build-isolation', str(source)],
                 check=True, capture_output=True)
  shutil.rmtree(source)  # the installed copy must stand alone
  elsewhere.mkdir()
  (elsewhere / 'my_config.py').write_text(USER_CONFIG)
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  blockqnn = str(venv / 'bin' / 'blockqnn')
  commands = {
      'by name': [blockqnn, '--config=cifar10:smoke', '--workdir=w',
                  '--config.early_stop.epochs=-2'],
      'by path': [blockqnn, '--workdir', 'w', '--config', 'my_config.py'],
      'variant': [blockqnn, '--config=cifar100:huge', '--workdir=w'],
  }
  runs = {name: subprocess.Popen(command, cwd=elsewhere, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
          for name, command in commands.items()}
  outputs = {name: run.communicate() + (run.returncode,) for name, run in runs.items()}
  assert outputs['by name'][1].strip() == CHECK_ERROR
  assert outputs['by path'][1].strip() == CHECK_ERROR.replace('-2', '-3')
  assert outputs['variant'][1].startswith('error: flag --config=')
  assert outputs['variant'][1].endswith(
      "/configs/cifar100.py:huge: ValueError: unknown variant 'huge' of the CIFAR configs, "
      "allowed: 'smoke', 'paper_agent'\n")
  assert all(code == 1 for _, _, code in outputs.values())
  assert not (elsewhere / 'w').exists()


def copy_sources(destination: pathlib.Path) -> None:
  destination.mkdir()
  for name in SOURCES:
    if (ROOT / name).is_dir():
      shutil.copytree(ROOT / name, destination / name,
                      ignore=shutil.ignore_patterns('__pycache__'))
    else:
      shutil.copy(ROOT / name, destination / name)


def test_the_sdist_holds_the_files_the_dependencies_are_read_from(tmp_path):
  """A wheel built from the sdist (python -m build, pip install of the sdist) reads its
  dependencies from the requirements files: setuptools only warns when one is missing,
  and the wheel then depends on nothing."""
  source = tmp_path / 'source'
  copy_sources(source)
  subprocess.run([sys.executable, '-c', 'from setuptools import build_meta; '
                  f'build_meta.build_sdist({str(tmp_path / "dist")!r})'],
                 cwd=source, check=True, capture_output=True)
  (sdist,) = (tmp_path / 'dist').iterdir()
  with tarfile.open(sdist) as archive:
    names = {name.split('/', 1)[1] for name in archive.getnames() if '/' in name}
  dynamic = tomllib.loads((ROOT / 'pyproject.toml').read_text())['tool']['setuptools'][
      'dynamic']
  read = [*dynamic['dependencies']['file'],
          *(f for extra in dynamic['optional-dependencies'].values() for f in extra['file'])]
  assert len(read) == 4 and not set(read) - names, sorted(names)


def test_the_cuda_extra_pins_the_jax_of_requirements_txt():
  jax = [line for line in (ROOT / 'requirements.txt').read_text().splitlines()
         if line.startswith('jax==')]
  cuda = (ROOT / 'requirements-cuda.txt').read_text().split()
  assert cuda == [jax[0].replace('jax', 'jax[cuda12]', 1)]
