"""The redefined reward's numbers, worked out by hand for a few blocks.

reward = accuracy - mu * log(1 + FLOPs / unit) - rho * log(density), the FLOPs counted on
a 32x32 input of F channels and the unit one 3x3 convolution cell at width F. On a row of
32 pixels a 'same'-padded window covers (nsc.window_taps): 1x1, 32 taps; 3x3, 30 * 3 +
2 * 2 = 94 (the two border outputs see 2); 5x5, 28 * 5 + 2 * 4 + 2 * 3 = 154. So the unit
is 2 * 94^2 * F^2 = 17,672 F^2 (a multiply-add counts 2).
"""

import math
import types

import pytest

from blockqnn_jax import nsc
from blockqnn_jax import reward

F = 16
UNIT = 17_672 * F * F  # 4,524,032
MU, RHO, ACCURACY = 0.1, 0.2, 0.9
WEIGHTS = types.SimpleNamespace(flops_weight=MU, density_weight=RHO)

# (codes, FLOPs, density), by hand. Density is edges / nodes, the input and the output
# concat counted as nodes and each layer feeding the output as one edge.
BLOCKS = {
    # One 3x3 conv: exactly the unit. Edges: 0->1, 1->out = 2; nodes 3.
    'conv3': ([[1, 1, 3, 0, 0], [2, 7, 0, 0, 0]], UNIT, 2 / 3),
    # Identity: no arithmetic, so log1p's 0 (log would be -inf). Density as conv3.
    'identity': ([[1, 4, 0, 0, 0], [2, 7, 0, 0, 0]], 0, 2 / 3),
    # conv 1x1 (2 * 32^2 F^2 = 2,048 F^2) and conv 5x5 (2 * 154^2 F^2 = 47,432 F^2) from the
    # input, concat (2F wide, under the 4F cap: free); the 2F output is projected back by a
    # 1x1 cell, 2 * 32^2 * 2F * F = 4,096 F^2. Total 53,576 F^2. Edges 1 + 1 + 2 + 1 = 5,
    # nodes 5.
    'concat': ([[1, 1, 1, 0, 0], [2, 1, 5, 0, 0], [3, 6, 0, 1, 2], [4, 7, 0, 0, 0]],
               53_576 * F * F, 1.0),
    # conv 3x3 (17,672 F^2) and 3x3 max pool (94^2 F = 8,836 F) from the input, concat
    # (2F, free), add(input, concat) (max(F, 2F) = 2F wide: 32^2 * 2F = 2,048 F), output
    # 2F projected (4,096 F^2). Total 21,768 F^2 + 10,884 F. Edges 1 + 1 + 2 + 2 + 1 = 7,
    # nodes 6.
    'add': ([[1, 1, 3, 0, 0], [2, 2, 3, 0, 0], [3, 6, 0, 1, 2], [4, 5, 0, 0, 3],
             [5, 7, 0, 0, 0]], 21_768 * F * F + 10_884 * F, 7 / 6),
}


@pytest.mark.parametrize('name', BLOCKS)
def test_terms_match_the_hand_worked_numbers(name):
  codes, flops, density = BLOCKS[name]
  terms = reward.reward_terms(nsc.Block.from_codes(codes), ACCURACY, WEIGHTS, F)
  assert terms['flops_ratio'] == pytest.approx(flops / UNIT)
  assert terms['density'] == pytest.approx(density)
  assert terms['flops_term'] == pytest.approx(MU * math.log1p(flops / UNIT))
  assert terms['density_term'] == pytest.approx(RHO * math.log(density))
  assert terms['reward'] == pytest.approx(
      ACCURACY - MU * math.log1p(flops / UNIT) - RHO * math.log(density))


def test_the_rewards_as_numbers():
  """The same, as literals: 0.9 - 0.1 log 2 - 0.2 log(2/3) = 0.9 - 0.069315 + 0.081093;
  0.9 - 0.1 log(1 + 53,576 / 17,672) = 0.9 - 0.1 log 4.031689; 0.9 - 0.1 log(1 +
  (21,768 * 16 + 10,884) / (17,672 * 16)) - 0.2 log(7/6) = 0.9 - 0.1 log 2.270272 -
  0.2 * 0.154151."""
  rewards = {name: reward.reward_terms(nsc.Block.from_codes(codes), ACCURACY, WEIGHTS,
                                       F)['reward']
             for name, (codes, _, _) in BLOCKS.items()}
  assert rewards == pytest.approx({'conv3': 0.911778, 'identity': 0.981093,
                                   'concat': 0.760581, 'add': 0.787180}, abs=1e-6)


@pytest.mark.parametrize('filters', [8, 64])
def test_the_unit_is_one_3x3_cell_at_the_blocks_width(filters):
  """A lone 3x3 conv is one unit, whatever F: the term does not drift with the width."""
  block = nsc.Block.from_codes(BLOCKS['conv3'][0])
  assert reward.reward_terms(block, ACCURACY, WEIGHTS, filters)['flops_ratio'] == 1.0
