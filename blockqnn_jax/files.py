"""Small file helpers every layer shares: block files and atomic JSON writes.

Here rather than in the search loop, so that training, transfer and drawing can read a
block without importing the search.
"""

from __future__ import annotations

import json
import os

from blockqnn_jax import nsc

BEST_FILE = 'best_block.json'


def write_json_atomic(path: str, obj) -> None:
  """Writes via a temporary file and rename, so a reader never sees half a file."""
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


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
