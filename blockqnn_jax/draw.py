"""Pictures of a block's DAG, as SVG and PNG, with every layer labelled.

  python -m blockqnn_jax.draw '[[1, 1, 3, 0, 0], [2, 7, 0, 0, 0]]' block.png
  python -m blockqnn_jax.draw WORKDIR/best_block.json block.svg

Layers are laid out in rows by their longest distance from the input; the output node
(the concat of every layer nothing consumes) is the last row.
"""

from __future__ import annotations

import dataclasses
import sys

from PIL import Image, ImageDraw

from blockqnn_jax import files
from blockqnn_jax import nsc

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 150, 34, 30, 40, 20
COLOURS = {
    0: '#dddddd', nsc.CONV: '#9ecae1', nsc.MAX_POOL: '#fdd0a2', nsc.AVG_POOL: '#fdae6b',
    nsc.IDENTITY: '#eeeeee', nsc.ADD: '#a1d99b', nsc.CONCAT: '#c7e9c0', nsc.TERMINAL: '#dddddd',
}


@dataclasses.dataclass(frozen=True)
class Layout:
  width: int
  height: int
  boxes: dict      # node -> (x, y, label, type); node 0 is the input, n+1 the output
  edges: list      # (from node, to node)


def layout(block: nsc.Block) -> Layout:
  output = len(block) + 1
  depth = {0: 0}
  for layer in block.layers:
    depth[layer.index] = 1 + max(depth[p] for p in layer.preds)
  depth[output] = 1 + max(depth[i] for i in block.output_layers)
  rows: dict[int, list[int]] = {}
  for node in sorted(depth):
    rows.setdefault(depth[node], []).append(node)
  widest = max(len(r) for r in rows.values())
  width = 2 * MARGIN + widest * BOX_W + (widest - 1) * GAP_X
  height = 2 * MARGIN + len(rows) * BOX_H + (len(rows) - 1) * GAP_Y
  labels = {0: ('0: input', 0), output: ('output: concat', nsc.TERMINAL)}
  labels.update({l.index: (f'{l.index}: {l.label}', l.type) for l in block.layers})
  boxes = {}
  for row, nodes in rows.items():
    row_width = len(nodes) * BOX_W + (len(nodes) - 1) * GAP_X
    for i, node in enumerate(nodes):
      x = (width - row_width) // 2 + i * (BOX_W + GAP_X)
      boxes[node] = (x, MARGIN + row * (BOX_H + GAP_Y), *labels[node])
  edges = [(p, l.index) for l in block.layers for p in l.preds]
  edges += [(i, output) for i in block.output_layers]
  return Layout(width, height, boxes, edges)


def _endpoints(lay: Layout, edge):
  (x0, y0, *_), (x1, y1, *_) = lay.boxes[edge[0]], lay.boxes[edge[1]]
  return x0 + BOX_W // 2, y0 + BOX_H, x1 + BOX_W // 2, y1


def to_svg(block: nsc.Block) -> str:
  lay = layout(block)
  parts = [
      f'<svg xmlns="http://www.w3.org/2000/svg" width="{lay.width}" height="{lay.height}" '
      'font-family="sans-serif" font-size="13">',
      '<defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="8" refY="4" '
      'orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#555"/></marker></defs>',
      f'<rect width="{lay.width}" height="{lay.height}" fill="white"/>']
  for edge in lay.edges:
    x0, y0, x1, y1 = _endpoints(lay, edge)
    parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" stroke="#555" '
                 'marker-end="url(#arrow)"/>')
  for x, y, label, layer_type in lay.boxes.values():
    parts.append(f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" '
                 f'fill="{COLOURS[layer_type]}" stroke="#333"/>')
    parts.append(f'<text x="{x + BOX_W // 2}" y="{y + BOX_H // 2 + 5}" '
                 f'text-anchor="middle">{label}</text>')
  return '\n'.join(parts + ['</svg>'])


def to_image(block: nsc.Block) -> Image.Image:
  lay = layout(block)
  image = Image.new('RGB', (lay.width, lay.height), 'white')
  canvas = ImageDraw.Draw(image)
  for edge in lay.edges:
    x0, y0, x1, y1 = _endpoints(lay, edge)
    canvas.line([(x0, y0), (x1, y1)], fill='#555555', width=2)
    canvas.polygon([(x1, y1), (x1 - 5, y1 - 9), (x1 + 5, y1 - 9)], fill='#555555')
  for x, y, label, layer_type in lay.boxes.values():
    canvas.rounded_rectangle([x, y, x + BOX_W, y + BOX_H], 6, fill=COLOURS[layer_type],
                             outline='#333333')
    canvas.text((x + BOX_W // 2, y + BOX_H // 2), label, fill='black', anchor='mm')
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
