"""The Network Structure Code: validation, round trips, canonical hash, density, FLOPs."""

import json
import subprocess
import sys

from hypothesis import event, given, settings
from hypothesis import strategies as st
import networkx as nx
import pytest

from blockqnn_jax import nsc
from tests import hypothesis_blocks


@given(hypothesis_blocks.blocks())
def test_codes_and_json_round_trip_exactly(block):
  codes = block.to_codes()
  assert nsc.Block.from_codes(codes) == block
  assert nsc.Block.from_json(json.dumps(codes)) == block
  assert json.loads(block.to_json()) == codes


@settings(max_examples=200)
@given(st.data())
def test_canonical_hash_is_invariant_under_renumbering(data):
  block = data.draw(hypothesis_blocks.blocks())
  other = data.draw(hypothesis_blocks.renumberings(block))
  assert other.canonical_hash() == block.canonical_hash()
  assert other.canonical() == block.canonical()


def test_hash_separates_different_architectures(small_codes):
  shared = [[1, 1, 3, 0, 0], [2, 5, 0, 1, 1], [3, 7, 0, 0, 0]]      # add(c, c)
  distinct = [[1, 1, 3, 0, 0], [2, 1, 3, 0, 0], [3, 5, 0, 1, 2], [4, 7, 0, 0, 0]]
  kernel = [[1, 1, 5, 0, 0], [2, 1, 3, 1, 0], [3, 5, 0, 1, 2], [4, 7, 0, 0, 0]]
  add_vs_concat = [[1, 1, 3, 0, 0], [2, 1, 3, 1, 0], [3, 6, 0, 1, 2], [4, 7, 0, 0, 0]]
  hashes = {nsc.Block.from_codes(c).canonical_hash()
            for c in (small_codes, shared, distinct, kernel, add_vs_concat)}
  assert len(hashes) == 5


def as_graph(block: nsc.Block) -> nx.DiGraph:
  """The block as networkx sees it: nodes labelled by op, edges counted (add(x, x) reads x
  twice); an independent notion of 'the same architecture'."""
  graph = nx.DiGraph()
  graph.add_node(0, op=(0, 0))
  for layer in block.layers:
    graph.add_node(layer.index, op=(layer.type, layer.kernel))
    for pred in layer.preds:
      if graph.has_edge(pred, layer.index):
        graph.edges[pred, layer.index]['count'] += 1
      else:
        graph.add_edge(pred, layer.index, count=1)
  return graph


def isomorphic(a: nsc.Block, b: nsc.Block) -> bool:
  return nx.is_isomorphic(as_graph(a), as_graph(b),
                          node_match=lambda x, y: x['op'] == y['op'],
                          edge_match=lambda x, y: x['count'] == y['count'])


@st.composite
def block_pairs(draw):
  """Two blocks: unrelated, the same DAG renumbered, or renumbered with one layer redrawn
  (often a different architecture that differs only in one kernel, op or edge)."""
  a = draw(hypothesis_blocks.blocks(max_layers=6))
  how = draw(st.sampled_from(['unrelated', 'renumbered', 'one layer redrawn']))
  if how == 'unrelated':
    return a, draw(hypothesis_blocks.blocks(max_layers=6))
  b = draw(hypothesis_blocks.renumberings(a))
  if how == 'renumbered':
    return a, b
  codes = b.to_codes()
  i = draw(st.integers(1, len(b)))
  layer_type = draw(st.sampled_from([t for t in nsc.TYPE_NAMES if t != nsc.TERMINAL]))
  kernel = draw(st.sampled_from(nsc.KERNELS[layer_type]))
  pred1 = draw(st.integers(0, i - 1))
  pred2 = draw(st.integers(0, i - 1)) if layer_type in nsc.TWO_INPUT_TYPES else 0
  codes[i - 1] = [i, layer_type, kernel, pred1, pred2]
  return a, nsc.Block.from_codes(codes)


@settings(max_examples=300, deadline=None)
@given(block_pairs())
def test_equal_hash_exactly_for_isomorphic_blocks(pair):
  a, b = pair
  same = isomorphic(a, b)
  event(f'isomorphic={same}, same codes={a.to_codes() == b.to_codes()}')
  assert (a.canonical_hash() == b.canonical_hash()) == same


def test_operand_order_of_add_and_concat_does_not_matter(small_block):
  swapped = [[1, 1, 3, 0, 0], [2, 1, 3, 1, 0], [3, 5, 0, 2, 1], [4, 7, 0, 0, 0]]
  assert nsc.Block.from_codes(swapped).canonical_hash() == small_block.canonical_hash()


@pytest.mark.parametrize('codes, message', [
    ([], 'at least one layer'),
    ('[[1, 7, 0, 0, 0]]', 'list of layers'),
    ([[1, 7, 0, 0, 0]], 'at least one layer before the terminal'),
    ([[1, 1, 3, 0, 0]], 'missing terminal'),
    ([[1, 1, 3, 0, 0], [2, 7, 0, 0, 0], [3, 7, 0, 0, 0]], 'terminal before the end'),
    ([[1, 9, 3, 0, 0], [2, 7, 0, 0, 0]], 'unknown type 9'),
    ([[1, 1, 7, 0, 0], [2, 7, 0, 0, 0]], 'kernel 7 not allowed for conv'),
    ([[1, 2, 5, 0, 0], [2, 7, 0, 0, 0]], 'kernel 5 not allowed for max_pool'),
    ([[1, 4, 3, 0, 0], [2, 7, 0, 0, 0]], 'kernel 3 not allowed for identity'),
    ([[1, 1, 3, 1, 0], [2, 7, 0, 0, 0]], 'pred1=1 is not an earlier layer'),
    ([[1, 1, 3, 0, 0], [2, 5, 0, 1, 2], [3, 7, 0, 0, 0]], 'pred2=2 is not an earlier layer'),
    ([[1, 1, 3, -1, 0], [2, 7, 0, 0, 0]], 'pred1=-1'),
    ([[1, 1, 3, 0, 1], [2, 7, 0, 0, 0]], 'pred2 must be 0'),
    ([[2, 1, 3, 0, 0], [3, 7, 0, 0, 0]], 'index 2 out of order, expected 1'),
    ([[1, 1, 3, 0], [2, 7, 0, 0, 0]], '5 integers'),
    ([[1, 1, 3.0, 0, 0], [2, 7, 0, 0, 0]], '3.0 is not an integer'),
    ([[1, 1, 3, 0, 0], [2, 7, 0, 1, 0]], 'terminal layer has no predecessors'),
    ([[i, 1, 3, i - 1, 0] for i in range(1, 25)] + [[25, 7, 0, 0, 0]], 'over the depth limit'),
])
def test_invalid_blocks_raise_with_the_layer_and_rule(codes, message):
  with pytest.raises(nsc.InvalidBlockError, match=message):
    nsc.Block.from_codes(codes)


def test_error_names_the_offending_layer():
  with pytest.raises(nsc.InvalidBlockError, match=r'layer 2 \[2, 1, 4, 0, 0\]'):
    nsc.Block.from_codes([[1, 1, 3, 0, 0], [2, 1, 4, 0, 0], [3, 7, 0, 0, 0]])


def test_invalid_block_error_is_a_value_error():
  assert issubclass(nsc.InvalidBlockError, ValueError)


def test_depth_limit_is_configurable():
  codes = [[1, 1, 3, 0, 0], [2, 1, 3, 1, 0], [3, 7, 0, 0, 0]]
  nsc.Block.from_codes(codes, max_layers=2)
  with pytest.raises(nsc.InvalidBlockError, match='at most 1 layers'):
    nsc.Block.from_codes(codes, max_layers=1)


def test_blocks_are_immutable(small_block):
  with pytest.raises(AttributeError):
    small_block.layers = ()
  with pytest.raises(TypeError):
    small_block.layers[0] = nsc.Layer(1, 1, 1, 0, 0)


def test_density_counts_edges_over_nodes(small_block):
  # input, 3 layers, output = 5 nodes; edges 0->1, 1->2, 1->3, 2->3, 3->out = 5.
  assert small_block.density() == pytest.approx(1.0)
  # Two leaves both feed the output: nodes 4, edges 0->1, 0->2, 1->out, 2->out.
  fan = nsc.Block.from_codes([[1, 1, 3, 0, 0], [2, 2, 3, 0, 0], [3, 7, 0, 0, 0]])
  assert fan.density() == pytest.approx(1.0)
  assert fan.output_layers == (1, 2)


def test_flops_of_a_residual_pair(small_block):
  f, h = 32, 8
  taps = (3 * h - 2) ** 2  # a 3x3 window over 8x8 'same' inputs misses 2 taps per row
  assert nsc.window_taps(h, 3) ** 2 == taps
  conv3 = 2 * taps * f * f
  assert small_block.flops(h, h, f) == 2 * conv3 + h * h * f


@pytest.mark.parametrize('size, kernel, stride, taps', [
    (8, 1, 1, 8), (8, 3, 1, 22), (8, 5, 1, 34), (1, 5, 1, 1), (8, 3, 2, 11), (7, 3, 2, 10)])
def test_window_taps_skip_the_padding(size, kernel, stride, taps):
  assert nsc.window_taps(size, kernel, stride) == taps


def test_widths_follow_the_channel_rules():
  # concat(conv, pool) = 2F; add(2F, F) = 2F, zero-padding the narrower; output projected.
  block = nsc.Block.from_codes(
      [[1, 1, 3, 0, 0], [2, 2, 3, 0, 0], [3, 6, 0, 1, 2], [4, 5, 0, 3, 1], [5, 7, 0, 0, 0]])
  widths, capped, output_projected = block.widths(16)
  assert widths == [16, 16, 16, 32, 32]
  assert capped == [False, False, False, False]
  assert output_projected


def test_concat_chains_are_capped():
  codes = [[1, 6, 0, 0, 0]] + [[i, 6, 0, i - 1, i - 1] for i in range(2, 23)] + [[23, 7, 0, 0, 0]]
  widths, capped, _ = nsc.Block.from_codes(codes).widths(8)
  assert max(widths) <= nsc.CONCAT_WIDTH_LIMIT * 8
  assert any(capped)


def test_importing_nsc_does_not_import_jax():
  code = 'import sys; import blockqnn_jax.nsc; print("jax" in sys.modules)'
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == 'False'
