"""Pictures of a block's DAG, as SVG and PNG, with every layer labelled.

  python -m blockqnn_jax.draw '[[1, 1, 3, 0, 0], [2, 7, 0, 0, 0]]' block.png
  python -m blockqnn_jax.draw WORKDIR/best_block.json block.svg

Layers are laid out in rows by their longest distance from the input; the output node
(the concat of every layer nothing consumes) is the last row. Every input of a layer is
its own edge (a layer reading the same layer twice gets two), from its own point on the
bottom of the source box to its own point on the top of the reader's box. An edge that
skips rows runs down a lane of its own in each row it crosses, a slot beside the boxes
(the dummy nodes of layered graph drawing), so no edge passes behind a box.
"""

from __future__ import annotations

import dataclasses
import math
import sys

from PIL import Image, ImageDraw

from blockqnn_jax import files
from blockqnn_jax import nsc

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 150, 34, 30, 40, 20
LANE_GAP = 12  # between a lane and whatever is beside it in its row
COLOURS = {
    0: '#dddddd', nsc.CONV: '#9ecae1', nsc.MAX_POOL: '#fdd0a2', nsc.AVG_POOL: '#fdae6b',
    nsc.IDENTITY: '#eeeeee', nsc.ADD: '#a1d99b', nsc.CONCAT: '#c7e9c0', nsc.TERMINAL: '#dddddd',
}

Point = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class Box:
  """A node's box: top-left corner, BOX_W x BOX_H."""
  x: float
  y: float
  label: str
  type: int


@dataclasses.dataclass(frozen=True)
class Edge:
  """One input of ``target``: a polyline from the bottom of ``source``'s box to the top of
  ``target``'s, the arrow at its last point."""
  source: int
  target: int
  points: tuple[Point, ...]


@dataclasses.dataclass(frozen=True)
class Layout:
  width: int
  height: int
  boxes: dict[int, Box]  # node -> box; node 0 is the input, n + 1 the output
  edges: list[Edge]      # one per input of each layer and of the output, in layer order


def layout(block: nsc.Block) -> Layout:
  """Where each box and edge of ``block``'s picture goes."""
  output = len(block) + 1
  inputs = {layer.index: layer.preds for layer in block.layers}
  inputs[output] = block.output_layers
  depth = {0: 0}
  for node in range(1, output + 1):
    depth[node] = 1 + max(depth[p] for p in inputs[node])
  links = [(p, node) for node in range(1, output + 1) for p in inputs[node]]
  rows = _ordered_rows(depth, links)
  centre, width = _centres(rows)
  row_top = lambda row: MARGIN + row * (BOX_H + GAP_Y)
  labels = {0: ('0: input', 0), output: ('output: concat', nsc.TERMINAL)}
  labels.update({l.index: (f'{l.index}: {l.label}', l.type) for l in block.layers})
  boxes = {node: Box(centre[('box', node)] - BOX_W / 2, row_top(depth[node]), *labels[node])
           for node in depth}
  # Each link's path through the rows between its ends: the lane's x in each of them.
  lanes = {i: [centre[('lane', i, row)] for row in range(depth[p] + 1, depth[t])]
           for i, (p, t) in enumerate(links)}
  out_x = _ports({i: (p, lanes[i][0] if lanes[i] else centre[('box', t)])
                  for i, (p, t) in enumerate(links)}, boxes)
  in_x = _ports({i: (t, lanes[i][-1] if lanes[i] else centre[('box', p)])
                 for i, (p, t) in enumerate(links)}, boxes)
  edges = []
  for i, (source, target) in enumerate(links):
    points = [(out_x[i], boxes[source].y + BOX_H)]
    for row, x in enumerate(lanes[i], depth[source] + 1):
      points += [(x, row_top(row)), (x, row_top(row) + BOX_H)]
    points.append((in_x[i], boxes[target].y))
    edges.append(Edge(source, target, tuple(points)))
  height = 2 * MARGIN + len(rows) * BOX_H + (len(rows) - 1) * GAP_Y
  return Layout(math.ceil(width), height, boxes, edges)


def _ordered_rows(depth: dict, links: list) -> list[list[tuple]]:
  """Each row's items, left to right: ('box', node) and ('lane', link, row) for every
  row a link skips. A row is sorted by the mean position of what feeds its items in the
  row above (the barycentre heuristic), which keeps edges from crossing needlessly."""
  rows = [[] for _ in range(max(depth.values()) + 1)]
  feeders: dict[tuple, list[tuple]] = {}
  for node in sorted(depth):
    rows[depth[node]].append(('box', node))
    feeders[('box', node)] = []
  for i, (source, target) in enumerate(links):
    above = ('box', source)
    for row in range(depth[source] + 1, depth[target]):
      lane = ('lane', i, row)
      rows[row].append(lane)
      feeders[lane] = [above]
      above = lane
    feeders[('box', target)].append(above)
  for row in range(1, len(rows)):
    position = {item: k for k, item in enumerate(rows[row - 1])}
    rows[row].sort(key=lambda item: (
        sum(position[f] for f in feeders[item]) / len(feeders[item]), item))
  return rows


def _centres(rows: list[list[tuple]]) -> tuple[dict, float]:
  """The x centre of every item, each row centred in the picture; the picture's width."""
  def gap(a, b):
    return GAP_X if a[0] == b[0] == 'box' else LANE_GAP

  def extent(item):
    return BOX_W if item[0] == 'box' else 0

  row_widths = [sum(map(extent, row)) + sum(gap(a, b) for a, b in zip(row, row[1:]))
                for row in rows]
  width = 2 * MARGIN + max(row_widths)
  centre = {}
  for row, row_width in zip(rows, row_widths):
    x = (width - row_width) / 2
    for k, item in enumerate(row):
      if k:
        x += gap(row[k - 1], item)
      centre[item] = x + extent(item) / 2
      x += extent(item)
  return centre, width


def _ports(ends: dict[int, tuple[int, float]], boxes: dict[int, Box]) -> dict[int, float]:
  """The x at which each link leaves (or enters) its box; ``ends`` maps a link to (the
  box's node, the x the link heads towards). A box's links spread evenly along its side in
  the order of those x, so no two edges share an end and none cross at the box."""
  by_node: dict[int, list[tuple[float, int]]] = {}
  for link, (node, towards) in ends.items():
    by_node.setdefault(node, []).append((towards, link))
  x = {}
  for node, heading in by_node.items():
    for k, (_, link) in enumerate(sorted(heading)):
      x[link] = boxes[node].x + BOX_W * (k + 1) / (len(heading) + 1)
  return x


def _arrow_head(edge: Edge) -> list[Point]:
  """The triangle at the end of ``edge``, along its last segment."""
  (x0, y0), (x1, y1) = edge.points[-2:]
  length = math.hypot(x1 - x0, y1 - y0)
  ux, uy = (x1 - x0) / length, (y1 - y0) / length
  return [(x1, y1), (x1 - 9 * ux - 5 * uy, y1 - 9 * uy + 5 * ux),
          (x1 - 9 * ux + 5 * uy, y1 - 9 * uy - 5 * ux)]


def to_svg(block: nsc.Block) -> str:
  lay = layout(block)
  parts = [
      f'<svg xmlns="http://www.w3.org/2000/svg" width="{lay.width}" height="{lay.height}" '
      'font-family="sans-serif" font-size="13">',
      '<defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="8" refY="4" '
      'orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#555"/></marker></defs>',
      f'<rect width="{lay.width}" height="{lay.height}" fill="white"/>']
  for edge in lay.edges:
    points = ' '.join(f'{x:g},{y:g}' for x, y in edge.points)
    parts.append(f'<polyline points="{points}" fill="none" stroke="#555" '
                 'marker-end="url(#arrow)"/>')
  for box in lay.boxes.values():
    parts.append(f'<rect x="{box.x:g}" y="{box.y:g}" width="{BOX_W}" height="{BOX_H}" '
                 f'rx="6" fill="{COLOURS[box.type]}" stroke="#333"/>')
    parts.append(f'<text x="{box.x + BOX_W / 2:g}" y="{box.y + BOX_H / 2 + 5:g}" '
                 f'text-anchor="middle">{box.label}</text>')
  return '\n'.join(parts + ['</svg>'])


def to_image(block: nsc.Block) -> Image.Image:
  lay = layout(block)
  image = Image.new('RGB', (lay.width, lay.height), 'white')
  canvas = ImageDraw.Draw(image)
  for edge in lay.edges:
    canvas.line(edge.points, fill='#555555', width=2, joint='curve')
    canvas.polygon(_arrow_head(edge), fill='#555555')
  for box in lay.boxes.values():
    canvas.rounded_rectangle([box.x, box.y, box.x + BOX_W, box.y + BOX_H], 6,
                             fill=COLOURS[box.type], outline='#333333')
    canvas.text((box.x + BOX_W / 2, box.y + BOX_H / 2), box.label, fill='black', anchor='mm')
  return image


def save(block: nsc.Block, path: str) -> None:
  """Writes ``path`` as SVG if it ends in .svg, else as an image PIL knows (PNG...)."""
  if path.endswith('.svg'):
    with open(path, 'w') as f:
      f.write(to_svg(block))
  else:
    to_image(block).save(path)


def main(argv: list[str]) -> None:
  if len(argv) != 3:
    sys.exit(f'usage: python -m blockqnn_jax.draw CODES_OR_JSON_FILE OUTPUT.png|.svg')
  save(files.load_block(argv[1]), argv[2])


if __name__ == '__main__':
  main(sys.argv)
