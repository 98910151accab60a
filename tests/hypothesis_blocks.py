"""Hypothesis strategies for NSC blocks, shared by the tests."""

from hypothesis import strategies as st

from blockqnn_jax import nsc


@st.composite
def blocks(draw, max_layers: int = nsc.MAX_LAYERS) -> nsc.Block:
  """Any valid block: every type, any predecessors, 1..max_layers layers."""
  n = draw(st.integers(1, max_layers))
  codes = []
  for index in range(1, n + 1):
    layer_type = draw(st.sampled_from([t for t in nsc.TYPE_NAMES if t != nsc.TERMINAL]))
    kernel = draw(st.sampled_from(nsc.KERNELS[layer_type]))
    pred1 = draw(st.integers(0, index - 1))
    pred2 = draw(st.integers(0, index - 1)) if layer_type in nsc.TWO_INPUT_TYPES else 0
    codes.append([index, layer_type, kernel, pred1, pred2])
  codes.append([n + 1, nsc.TERMINAL, 0, 0, 0])
  return nsc.Block.from_codes(codes, max_layers)


@st.composite
def renumberings(draw, block: nsc.Block) -> nsc.Block:
  """The same DAG in another valid layer order, add/concat operands possibly swapped."""
  placed, order = {0}, []
  remaining = list(block.layers)
  while remaining:
    ready = [l for l in remaining if all(p in placed for p in l.preds)]
    layer = draw(st.sampled_from(ready))
    remaining.remove(layer)
    placed.add(layer.index)
    order.append(layer)
  new = {0: 0, **{l.index: i + 1 for i, l in enumerate(order)}}
  codes = []
  for layer in order:
    preds = [new[p] for p in layer.preds]
    if len(preds) == 2 and draw(st.booleans()):
      preds.reverse()
    pred1, pred2 = (preds + [0])[:2]
    codes.append([new[layer.index], layer.type, layer.kernel, pred1, pred2])
  codes.append([len(order) + 1, nsc.TERMINAL, 0, 0, 0])
  return nsc.Block.from_codes(codes)
