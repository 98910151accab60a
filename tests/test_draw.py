"""The block picture's geometry (draw.layout): one edge per input, from its source's box to
its reader's, none passing behind a box, no two sharing an end."""

import collections
import random

import pytest

from blockqnn_jax import draw
from blockqnn_jax import nsc

# 1 -> 3 skips the row of 2, which sits right below 1: a straight line passes behind 2.
SKIPPING = [[1, 1, 3, 0, 0], [2, 1, 3, 1, 0], [3, 5, 0, 1, 2], [4, 7, 0, 0, 0]]
# A concat of layer 1 with itself: two inputs, two edges.
REPEATED = [[1, 1, 3, 0, 0], [2, 6, 0, 1, 1], [3, 7, 0, 0, 0]]
# The quickstart's best block (seed 0): max_pool 1 feeds the add 4, and the edge from it,
# drawn straight, ran behind the concat 3, which reads conv 2 twice.
QUICKSTART_BEST = [[1, 2, 1, 0, 0], [2, 1, 5, 0, 0], [3, 6, 0, 2, 2], [4, 5, 0, 1, 3],
                   [5, 7, 0, 0, 0]]


def _random_codes(rng: random.Random, layers: int) -> list[list[int]]:
  codes = []
  for index in range(1, layers + 1):
    layer_type = rng.choice([nsc.CONV, nsc.MAX_POOL, nsc.AVG_POOL, nsc.IDENTITY, nsc.ADD,
                             nsc.CONCAT])
    two = layer_type in nsc.TWO_INPUT_TYPES
    codes.append([index, layer_type, rng.choice(nsc.KERNELS[layer_type]),
                  rng.randrange(index), rng.randrange(index) if two else 0])
  return codes + [[layers + 1, nsc.TERMINAL, 0, 0, 0]]


_RNG = random.Random(0)
BLOCKS = [SKIPPING, REPEATED, QUICKSTART_BEST] + [
    _random_codes(_RNG, _RNG.randint(1, 12)) for _ in range(150)]


def _inputs(block: nsc.Block) -> collections.Counter:
  """(source, reader) of every input, a repeated input counted twice; n + 1 the output."""
  links = collections.Counter((p, l.index) for l in block.layers for p in l.preds)
  links.update((i, len(block) + 1) for i in block.output_layers)
  return links


def _enters(start, end, box: draw.Box) -> bool:
  """Whether the segment start-end runs through the inside of ``box`` (touching its
  border does not count): Liang-Barsky clipping to the box shrunk by half a pixel."""
  (x0, y0), (x1, y1) = start, end
  low, high = 0.0, 1.0
  inner = 0.5
  for step, room in ((x0 - x1, x0 - box.x - inner), (x1 - x0, box.x + draw.BOX_W - inner - x0),
                     (y0 - y1, y0 - box.y - inner), (y1 - y0, box.y + draw.BOX_H - inner - y0)):
    if step == 0:
      if room <= 0:
        return False
    elif step < 0:
      low = max(low, room / step)
    else:
      high = min(high, room / step)
  return low < high


def test_the_clipping_sees_a_segment_through_a_box_and_not_one_along_its_border():
  box = draw.Box(0, 0, '', 0)
  assert _enters((-10, 10), (200, 20), box)
  assert _enters((75, 0), (75, 34), box)
  assert not _enters((75, 34), (90, 74), box)
  assert not _enters((0, -5), (150, -5), box)


def test_every_input_is_one_edge_from_its_source_to_its_reader():
  for codes in BLOCKS:
    block = nsc.Block.from_codes(codes)
    lay = draw.layout(block)
    assert collections.Counter((e.source, e.target) for e in lay.edges) == _inputs(block)
    for edge in lay.edges:
      (x0, y0), (x1, y1) = edge.points[0], edge.points[-1]
      source, target = lay.boxes[edge.source], lay.boxes[edge.target]
      assert y0 == source.y + draw.BOX_H and source.x < x0 < source.x + draw.BOX_W, (codes, edge)
      assert y1 == target.y and target.x < x1 < target.x + draw.BOX_W, (codes, edge)


def test_no_edge_passes_behind_a_box():
  for codes in BLOCKS:
    lay = draw.layout(nsc.Block.from_codes(codes))
    for edge in lay.edges:
      for start, end in zip(edge.points, edge.points[1:]):
        for node, box in lay.boxes.items():
          assert not _enters(start, end, box), (codes, edge, node)


def test_no_two_edges_share_an_end():
  for codes in BLOCKS:
    lay = draw.layout(nsc.Block.from_codes(codes))
    starts = [e.points[0] for e in lay.edges]
    ends = [e.points[-1] for e in lay.edges]
    assert len(set(starts)) == len(starts) and len(set(ends)) == len(ends), codes


@pytest.mark.parametrize('codes, source, reader', [(REPEATED, 1, 2), (QUICKSTART_BEST, 2, 3)])
def test_a_repeated_input_is_two_edges(codes, source, reader):
  lay = draw.layout(nsc.Block.from_codes(codes))
  twice = [e for e in lay.edges if (e.source, e.target) == (source, reader)]
  assert len(twice) == 2
  assert twice[0].points[0] != twice[1].points[0] and twice[0].points[-1] != twice[1].points[-1]


def test_the_quickstart_block_shows_max_pool_feeding_the_add():
  lay = draw.layout(nsc.Block.from_codes(QUICKSTART_BEST))
  assert [lay.boxes[n].label for n in (1, 3, 4)] == ['1: max_pool 1x1', '3: concat', '4: add']
  (edge,) = [e for e in lay.edges if e.source == 1]
  add, concat = lay.boxes[4], lay.boxes[3]
  assert edge.target == 4
  assert edge.points[-1][1] == add.y and add.x < edge.points[-1][0] < add.x + draw.BOX_W
  for start, end in zip(edge.points, edge.points[1:]):
    assert not _enters(start, end, concat)
