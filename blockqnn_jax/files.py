"""Small file helpers every layer shares: block files and atomic writes.

Here rather than in the search loop, so that training, transfer and drawing can read a
block without importing the search.
"""

from __future__ import annotations

import contextlib
import json
import os

from blockqnn_jax import nsc

BEST_FILE = 'best_block.json'


@contextlib.contextmanager
def open_atomic(path: str, newline: str | None = None):
  """A text file to write ``path`` through: written as ``path.tmp``, synced and renamed
  over ``path`` once complete, so a reader, or a rerun after a kill, finds the old file or
  the whole new one, never part of it. An error while writing removes the temporary file
  and leaves ``path`` as it was."""
  tmp = f'{path}.tmp'
  try:
    with open(tmp, 'w', newline=newline) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise
  os.replace(tmp, path)


def write_json_atomic(path: str, obj) -> None:
  """Writes via a temporary file and rename, so a reader never sees half a file."""
  with open_atomic(path) as f:
    json.dump(obj, f, indent=1)


def load_block(spec: str, max_layers: int = nsc.MAX_LAYERS) -> nsc.Block:
  """A block from a best_block.json path, a search workdir (its best block), or inline
  codes as JSON text."""
  text = spec.strip()
  if not text.startswith('['):
    path = os.path.join(spec, BEST_FILE) if os.path.isdir(spec) else spec
    if not os.path.exists(path):
      raise FileNotFoundError(f'no block file at {path} (give a best_block.json, a search '
                              'workdir or inline codes like [[1, 1, 3, 0, 0], [2, 7, 0, 0, 0]])')
    with open(path) as f:
      text = f.read()
  try:
    codes = json.loads(text)
  except json.JSONDecodeError as error:
    raise nsc.InvalidBlockError(f'not JSON: {error}') from None
  if isinstance(codes, dict):
    codes = codes.get('codes')
  return nsc.Block.from_codes(codes, max_layers)
