"""What several test modules share outside fixtures (module-level constants, parametrize
lists, command lines): the small block, where CIFAR-10 is prepared, a workdir's files.

conftest.py turns the block and the CIFAR-10 location into fixtures for test functions (the
fixtures skip a test where CIFAR-10 is not prepared).
"""

import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
# A conv, a conv on it, their sum: the block the training tests build, as JSON (the form a
# config's ``block`` and a command line take).
SMALL = '[[1, 1, 3, 0, 0], [2, 1, 3, 1, 0], [3, 5, 0, 1, 2], [4, 7, 0, 0, 0]]'
# The TFDS data directory (``config.data_dir``) and CIFAR-10's prepared directory in it
# (``config.dataset`` in mode=transfer_imagenet).
TFDS_DIR = pathlib.Path(os.environ.get('TFDS_DATA_DIR') or
                        ROOT.parent / 'shared' / 'data' / 'tfds')
CIFAR10_DIR = TFDS_DIR / 'cifar10' / '3.0.2'


def workdir_files(workdir: pathlib.Path) -> dict:
  """Every file under ``workdir`` and its bytes: what a refused start must leave as is."""
  return {str(path.relative_to(workdir)): path.read_bytes()
          for path in sorted(workdir.rglob('*')) if path.is_file()}
