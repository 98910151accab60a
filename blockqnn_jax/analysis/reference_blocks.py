"""The three reference blocks (small, medium, deep) that the speed benchmarks time and
the model tests build, read from ``reference_blocks.json`` beside this module."""

from __future__ import annotations

import json
import pathlib

from blockqnn_jax import nsc

PATH = pathlib.Path(__file__).resolve().with_name('reference_blocks.json')


def load(path: str | pathlib.Path = PATH) -> dict[str, nsc.Block]:
  """The blocks of a JSON file of NSC codes by name (default: the reference blocks)."""
  codes = json.loads(pathlib.Path(path).read_text())
  return {name: nsc.Block.from_codes(block) for name, block in codes.items()}
