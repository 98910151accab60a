"""NAS-Bench-201 cells: their FLOPs, their density, and the paper's redefined reward.

A cell is 6 digits, one operation per edge in the order 0->1, 0->2, 1->2, 0->3, 1->3, 2->3
(``OPS`` gives the names); node 0 is the cell's input and node 3 its output. The network
is a stem conv, three stages of 5 cells at 16, 32 and 64 channels with a residual
reduction block between stages, and a classifier (Dong & Yang, ICLR 2020).

FLOPs follow NAS-Bench-201's own count (xautodl ``get_model_infos``): multiply-accumulates
of the convolutions and of the classifier (with its bias), every padded tap counted;
pooling, BatchNorm, ReLU, the sums at the nodes and ``none`` count nothing, since its
counter sums only Conv2d and Linear layers. So the cheapest cell's network is 7.78305 and
the all-3x3 one 220.11969 MFLOPs on CIFAR-10, as the benchmark reports.

The redefined reward mirrors ``blockqnn_jax/reward.py``:
``accuracy - mu * log1p(work) - rho * log(density)``, accuracy a fraction in [0, 1] (the
table's percent / 100), so mu and rho mean what they do in ``config.reward``.
Pure Python and NumPy, so a table of 15,625 cells is scored in well under a second.
``add_reward_columns`` writes a copy of a table with that reward as columns, so that a
search benchmark (``tabular``) can use it as its reward.
"""

from __future__ import annotations

import csv
import functools

import numpy as np

from blockqnn_jax import files
from blockqnn_jax.analysis import tabular

OPS = ('none', 'skip_connect', 'nor_conv_1x1', 'nor_conv_3x3', 'avg_pool_3x3')
EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # the order of the digits
NODES = 4
STAGE_CHANNELS = (16, 32, 64)
CELLS_PER_STAGE = 5
CONV_KERNELS = {'2': 1, '3': 3}  # digit -> kernel of nor_conv_kxk (ReLU-Conv-BN)
STRING_COLUMNS = ('ops', 'arch')  # kept as written: ops start with 0 ('000000')


def check_ops(ops) -> str:
  if not (isinstance(ops, str) and len(ops) == len(EDGES) and
          all('0' <= c < str(len(OPS)) for c in ops)):
    raise ValueError(f'a NAS-Bench-201 cell is {len(EDGES)} digits 0-{len(OPS) - 1} '
                     f'(one op per edge), got {ops!r}')
  return ops


def _conv(size: int, c_in: int, c_out: int, kernel: int) -> int:
  """Multiply-accumulates of a conv with a size x size output (padded taps count)."""
  return size * size * kernel * kernel * c_in * c_out


def cell_flops(ops: str, num_classes: int = 10, image_size: int = 32) -> float:
  """Multiply-accumulates of the whole network built with this cell, one image."""
  check_ops(ops)
  if image_size < 4 or image_size % 4:
    raise ValueError(f'image_size must be a multiple of 4 (two stride-2 reductions), got '
                     f'{image_size}')
  size, channels = image_size, STAGE_CHANNELS[0]
  total = _conv(size, 3, channels, 3)  # stem: conv 3x3 + BN
  for stage, width in enumerate(STAGE_CHANNELS):
    if stage:  # ReLU-conv3x3/2 -> ReLU-conv3x3, shortcut avgpool 2x2/2 -> conv 1x1
      size //= 2
      total += (_conv(size, channels, width, 3) + _conv(size, width, width, 3) +
                _conv(size, channels, width, 1))
      channels = width
    total += CELLS_PER_STAGE * sum(
        _conv(size, channels, channels, CONV_KERNELS[op]) for op in ops if op in CONV_KERNELS)
  return float(total + channels * num_classes + num_classes)  # BN-ReLU, pool, linear


SKELETON_FLOPS = cell_flops('0' * len(EDGES))  # stem, reductions, classifier (CIFAR-10)
# One 3x3 conv edge in all 15 cells; every stage costs the same (channels x2, maps /4).
UNIT_FLOPS = cell_flops('000300') - SKELETON_FLOPS


def cell_work(ops: str) -> float:
  """The cell's own FLOPs in 3x3-conv edges, as reward.py's ratio counts the block's own
  FLOPs in 3x3 convs at 32x32: the skeleton, the same for every cell, is left out."""
  return (cell_flops(ops) - SKELETON_FLOPS) / UNIT_FLOPS


def cell_density(ops: str) -> float:
  """Edges / nodes without the `none` edges; all 4 nodes count, as in nsc.Block.density,
  and a cell with no edge counts one (1/4, the sparsest), so log(density) stays finite."""
  edges = sum(op != '0' for op in check_ops(ops))
  return max(edges, 1) / NODES


@functools.lru_cache(maxsize=None)
def _log_terms(ops: str) -> tuple[float, float]:
  return float(np.log1p(cell_work(ops))), float(np.log(cell_density(ops)))


def reward_terms(ops) -> tuple[np.ndarray, np.ndarray]:
  """log1p(work) and log(density) of each cell: computed once, reused over a grid."""
  terms = np.array([_log_terms(o) for o in ops], dtype=np.float64).reshape(-1, 2)
  return terms[:, 0], terms[:, 1]


def reward_from_terms(accuracy, terms: tuple[np.ndarray, np.ndarray], mu: float,
                      rho: float) -> np.ndarray:
  """accuracy - mu * log1p(work) - rho * log(density), from ``reward_terms``' output."""
  accuracy = np.asarray(accuracy, dtype=np.float64)
  log_work, log_density = terms
  if accuracy.shape != log_work.shape:
    raise ValueError(f'accuracies of shape {accuracy.shape} for {len(log_work)} cells')
  return accuracy - mu * log_work - rho * log_density


def redefined_reward(accuracy, ops, mu: float, rho: float) -> np.ndarray:
  """The reward of each cell; accuracy a fraction."""
  return reward_from_terms(accuracy, reward_terms(ops), mu, rho)


def read_table(path: str) -> dict[str, np.ndarray]:
  """The CSV's columns by name: ``ops`` and ``arch`` as the strings written (never parsed
  as numbers, which would drop the leading zeros), every other column as float64. A bad
  row is a one-line ``tabular.TableError`` naming its line."""
  return _columns(path, *tabular.read_rows(path))


def _columns(path: str, header: list[str],
             rows: list[tuple[int, list[str]]]) -> dict[str, np.ndarray]:
  """``read_table`` of the CSV's header and rows (``tabular.read_rows``)."""
  if not rows:
    raise tabular.TableError(f'{path}: no rows under the header')
  table = {}
  for i, name in enumerate(header):
    values = [row[i] for _, row in rows]
    if name in STRING_COLUMNS:
      table[name] = np.array(values, dtype=str)
      continue
    try:
      table[name] = np.array(values, dtype=np.float64)
    except ValueError:
      line, value = next((line, row[i]) for line, row in rows if not _is_number(row[i]))
      raise tabular.TableError(f'{path} line {line}: column {name!r} holds {value!r}, not '
                               'a number') from None
  if 'ops' in header:
    ops_at = header.index('ops')
    for line, row in rows:
      try:
        check_ops(row[ops_at])
      except ValueError as error:
        raise tabular.TableError(f'{path} line {line}: {error}') from None
  return table


def _is_number(text: str) -> bool:
  try:
    np.float64(text)
  except ValueError:
    return False
  return True


def column(table: dict, name: str) -> np.ndarray:
  if name not in table:
    raise ValueError(f'the table has no column {name!r}; its columns: {", ".join(table)}')
  return table[name]


def add_reward_columns(source: str, path: str, datasets: list[str], mu: float, rho: float,
                       score: str = 'val12') -> None:
  """Copies the CSV row by row (every value as written: ``ops`` keeps its leading zeros),
  adding ``{ds}_redefined12``: the reward of ``{ds}_{score}``, in percent. Written
  atomically (``files.open_atomic``): a kill leaves the old file or none, never a
  truncated last number that would read as another reward."""
  header, rows = tabular.read_rows(source)
  table = _columns(source, header, rows)
  added = {f'{ds}_redefined12': 100 * redefined_reward(
      column(table, f'{ds}_{score}') / 100, table['ops'], mu, rho) for ds in datasets}
  with files.open_atomic(path, newline='') as f:
    writer = csv.writer(f, lineterminator='\n')
    writer.writerow(header + list(added))
    for k, (_, row) in enumerate(rows):
      writer.writerow(row + [f'{values[k]:.4f}' for values in added.values()])
