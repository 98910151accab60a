"""Predictor-guided proposals for any strategy (``config.search.predictor``).

``PredictorGuided`` wraps a strategy and has its interface. Each proposal:
1. the wrapped strategy proposes as it would unguided (``inner.propose()``, its own
   generator and counters advancing exactly as they would);
2. until ``warmup`` distinct architectures are evaluated, that proposal is the answer
   unless it repeats one evaluated or proposed in this iteration (then the first new one
   drawn the strategy's way, step 3); while the predictor cannot fit, it is the answer
   as it is, so the search is the unguided one;
3. after it, ``candidates - 1`` more are drawn the strategy's own way (its ``propose`` on
   a shallow copy that draws from the wrapper's generator, so the strategy itself is left
   as it was: Q-learning's epsilon-greedy samples, evolution's tournament winners'
   mutations, random search's draws) and, for a strategy named in ``best_mutations_for``,
   ``best_mutations`` more are one or two mutations (``space.mutate``, even odds) of the
   best architecture evaluated;
4. the predictor (``predictor.EnsemblePredictor`` on ``space.features``, fit to the
   rewards floored at their ``floor_quantile`` quantile) ranks the
   distinct ones neither evaluated nor proposed earlier in this iteration, by mean +
   kappa x spread (``'ucb'``) or by one ensemble member drawn at random (``'thompson'``),
   and the best is proposed (the first of equals, the strategy's own proposal first);
   where every candidate is evaluated or pending, the first new one of up to
   ``candidates - 1`` more drawn the strategy's way, else the strategy's own;
5. except that with probability ``own_share`` (drawn from the wrapper's generator) a
   proposal after the warm-up skips steps 3 and 4 and is made as in step 2: the strategy's
   own way, unranked. Ranked proposals only, late in a search, can settle every run in
   the basin the predictor favours; a share of the strategy's own keeps its diversity.

Local search is guided differently: its candidates are the unproposed neighbours of its
climb's best, all of them, and the wrapper gives it the ranking (``LocalSearch.rank``)
instead of choosing for it. Until ``random_first`` of a best's neighbours are proposed
(those proposed before it became the best count, its predecessor among them), the next is
a random one, as unguided; then the rest come in the predictor's order. Ranked from the
first, the climbs ended at the best cells less often than in random order, and guided
local search fell below unguided (docs/reproducing.md#guided-local-search-random_first-8).
A best with no more neighbours than that is climbed unguided. During the warm-up or while
the predictor cannot rank, its neighbours come in random order, and so does a neighbour
left to it (``own_share``; a climb's start is random either way). ``candidates`` and
``best_mutations`` do not apply to it.

``feedback`` passes every evaluated architecture and its real reward to the wrapped
strategy, so it learns from evaluated architectures only (Q-learning's replay holds real
rewards, never a prediction), and adds each distinct one to the predictor once, in
feedback order. The state is the wrapped strategy's, the wrapper's generator and the
evaluations in feedback order; loading it replays them into a fresh predictor, which
rebuilds it exactly (its bootstrap counts depend only on the seed and a point's index),
so a resumed search proposes what an uninterrupted one does.

A predictor that cannot be used (a space without ``features``, a vector it cannot take,
too few points, every point encoded alike) logs one warning and the wrapper proposes as
the unguided strategy would; a fit is tried again at the next proposal.
"""

from __future__ import annotations

import collections
import copy

from absl import logging
import numpy as np

from blockqnn_jax import predictor

ACQUISITIONS = ('ucb', 'thompson')
# The strategies it can guide. DRAWN's propose() changes only the strategy's
# generator and counters, so a shallow copy draws candidates without touching the strategy;
# local search takes a ranking of its own candidates (LocalSearch.rank).
DRAWN = ('qlearning', 'random', 'evolution')
GUIDED = DRAWN + ('local_search',)
FIELDS = ('enabled', 'members', 'ridge', 'warmup', 'candidates', 'best_mutations',
          'best_mutations_for', 'acquisition', 'kappa', 'own_share',
          'random_first', 'floor_quantile')  # config.search.predictor's
SUFFIX = '+predictor'
# Candidates' encodings remembered, the least recently used forgotten first: candidates recur from
# proposal to proposal (mutations of the same best), but a search of NSC blocks draws
# millions of distinct ones, at 4 KiB an encoding (516 float64s): 16,384 is 68 MiB at most.
_FEATURE_MEMORY = 1 << 14
_STREAM = 0x9E37  # the wrapper's generator: seeded by (seed, this), apart from the strategy's


class PredictorGuided:
  """``inner`` with its proposals chosen among candidates by a learned predictor."""

  def __init__(self, inner, predictor_config, seed: int):
    self.inner = inner
    self.name = inner.name + SUFFIX
    self.members = int(predictor_config.members)
    self.ridge = float(predictor_config.ridge)
    self.floor_quantile = float(predictor_config.floor_quantile)
    self.warmup = int(predictor_config.warmup)
    self.candidates = int(predictor_config.candidates)
    # Mutations of the best only for the strategies listed: Q-learning's own greedy
    # samples rank better late (docs/reproducing.md).
    self.best_mutations = (int(predictor_config.best_mutations)
                           if inner.name in predictor_config.best_mutations_for else 0)
    self.acquisition = predictor_config.acquisition
    if self.acquisition not in ACQUISITIONS:
      raise ValueError(f'config.search.predictor.acquisition={self.acquisition!r} is '
                       f'unknown, allowed {ACQUISITIONS}')
    self.kappa = float(predictor_config.kappa)
    self.own_share = float(predictor_config.own_share)
    self.random_first = int(predictor_config.random_first)
    self.seed = int(seed)
    self.rng = np.random.default_rng([self.seed, _STREAM])
    # space.features per key, least recently used first: derived, not saved.
    self._features: collections.OrderedDict = collections.OrderedDict()
    self._reset_history()
    self.ranks_itself = hasattr(inner, 'rank')
    if self.ranks_itself:
      inner.rank = self._rank_for_inner

  def _reset_history(self) -> None:
    self.history: list[tuple] = []   # (arch, reward) of each distinct evaluation, in order
    self.evaluated: set[str] = set()
    self.pending: set[str] = set()   # proposed in this iteration, not yet fed back
    self.best: tuple | None = None   # (arch, reward) of the best evaluated
    self.predictor: predictor.EnsemblePredictor | None = None
    self.unusable = ''               # why the predictor cannot be used, once it cannot
    self.warned = False

  # The wrapped strategy's schedule and space.
  @property
  def space(self):
    return self.inner.space

  @property
  def iteration(self) -> int:
    return self.inner.iteration

  @property
  def epsilon(self) -> float:
    return self.inner.epsilon

  @property
  def finished(self) -> bool:
    return self.inner.finished

  @property
  def num_iterations(self) -> int:
    return self.inner.num_iterations

  @property
  def blocks_per_iteration(self) -> int:
    return self.inner.blocks_per_iteration

  def propose(self):
    if self.ranks_itself:  # it scores its own candidates with _rank_for_inner and keeps
      return self.inner.propose()  # its own pending proposals
    own = self.inner.propose()
    if len(self.history) < self.warmup:
      chosen = self._first_new(own)
    elif self._usable():
      chosen = self._first_new(own) if self._left_to_inner() else self._choose(own)
    else:
      chosen = own
    self.pending.add(self.space.key(chosen))
    return chosen

  def _drawn(self, count: int) -> list:
    """``count`` proposals the strategy's own way, drawn from the wrapper's generator on a
    shallow copy of it, so that the strategy's own state is left as it was."""
    archs = []
    for _ in range(count):
      shadow = copy.copy(self.inner)
      shadow.rng = self.rng
      archs.append(shadow.propose())
    return archs

  def _is_new(self, arch) -> bool:
    key = self.space.key(arch)
    return key not in self.evaluated and key not in self.pending

  def _first_new(self, own):
    """In the warm-up: the strategy's own proposal, or where it repeats one evaluated or
    pending, the first new one of up to ``candidates - 1`` more drawn its way."""
    if self._is_new(own):
      return own
    for _ in range(self.candidates - 1):
      arch = self._drawn(1)[0]
      if self._is_new(arch):
        return arch
    return own

  def _usable(self) -> bool:
    """Whether the predictor can rank now; the first time it cannot, one warning."""
    reason = self.unusable
    if not reason and self.predictor is None:
      reason = 'no architecture evaluated yet'
    elif not reason:
      try:
        self.predictor.predict(np.zeros((1, self.predictor.dimension)))
        return True
      except predictor.PredictorError as error:
        reason = str(error)
    if not self.warned:
      logging.warning('the predictor cannot be used (%s): proposing as unguided %s does',
                      reason, self.inner.name)
      self.warned = True
    return False

  def _rank_for_inner(self, archs: list, proposed: int) -> np.ndarray | None:
    """The acquisition's scores of ``archs``, the unproposed neighbours of a climb's best
    (``proposed`` of its neighbours proposed already); None (a random one) while
    ``proposed`` is under ``random_first``, in the warm-up, while the predictor cannot
    rank, or when left to the strategy."""
    if (proposed < self.random_first or len(self.history) < self.warmup
        or not self._usable() or self._left_to_inner()):
      return None
    return self._scores(np.stack([self._features_of(self.space.key(a), a) for a in archs]))

  def _left_to_inner(self) -> bool:
    """Whether this proposal after the warm-up is the strategy's own (``own_share``)."""
    return self.own_share > 0 and self.rng.random() < self.own_share

  def _scores(self, features: np.ndarray) -> np.ndarray:
    """Mean + kappa x spread (``'ucb'``), or one ensemble member drawn at random
    (``'thompson'``)."""
    if self.acquisition == 'ucb':
      mean, spread = self.predictor.predict(features)
      return mean + self.kappa * spread
    member = self.rng.integers(self.members)
    return self.predictor.member_predictions(features)[member]

  def _choose(self, own):
    """The best candidate by the acquisition, among those neither evaluated nor pending."""
    shadow_archs = self._drawn(self.candidates - 1)
    mutants = []
    for _ in range(self.best_mutations):
      arch = self.space.mutate(self.best[0], self.rng)
      if self.rng.random() < 0.5:
        arch = self.space.mutate(arch, self.rng)
      mutants.append(arch)
    archs, rows, seen = [], [], set(self.evaluated) | self.pending
    for arch in [own] + shadow_archs + mutants:
      key = self.space.key(arch)
      if key not in seen:
        seen.add(key)
        archs.append(arch)
        rows.append(self._features_of(key, arch))
    if not archs:
      return self._first_new(own)
    return archs[int(np.argmax(self._scores(np.stack(rows))))]

  def predict(self, archs: list) -> tuple[np.ndarray, np.ndarray] | None:
    """The predictor's mean and spread for ``archs`` as it stands (what the search logs
    and shows beside each real reward), or None while it cannot rank."""
    if self.predictor is None or self.unusable:
      return None
    try:
      return self.predictor.predict(np.stack([self.space.features(a) for a in archs]))
    except predictor.PredictorError:
      return None

  def _features_of(self, key: str, arch) -> np.ndarray:
    """``space.features(arch)``, kept per key: candidates recur from proposal to proposal
    (mutations of the same best), and an encoding depends on the architecture alone."""
    features = self._features.get(key)
    if features is None:
      features = self._features[key] = self.space.features(arch)
      if len(self._features) > _FEATURE_MEMORY:
        self._features.popitem(last=False)
    else:
      self._features.move_to_end(key)
    return features

  def feedback(self, arch, reward: float) -> None:
    """The wrapped strategy learns the real reward; a new architecture joins the
    predictor's points."""
    self.inner.feedback(arch, reward)
    key = self.space.key(arch)
    self.pending.discard(key)
    if key not in self.evaluated:
      self._record(key, arch, float(reward))

  def _record(self, key: str, arch, reward: float) -> None:
    self.evaluated.add(key)
    self.history.append((arch, reward))
    if self.best is None or reward > self.best[1]:
      self.best = (arch, reward)
    if self.unusable:
      return
    try:
      features = self.space.features(arch)
      if self.predictor is None:
        self.predictor = predictor.EnsemblePredictor(
            self.space.feature_size, self.members, self.ridge, self.seed,
            floor_quantile=self.floor_quantile)
      self.predictor.add(features, reward)
    except (AttributeError, predictor.PredictorError) as error:
      self.unusable = f'{type(error).__name__}: {error}'

  def end_iteration(self) -> None:
    self.pending.clear()
    self.inner.end_iteration()

  def state_dict(self) -> dict:
    """The wrapped strategy's state, the wrapper's generator and the evaluations."""
    state = self.inner.state_dict()
    encoded = [self.space.encode(a) for a, _ in self.history]
    state.update({
        'predictor_rng': self.rng.bit_generator.state,
        'predictor_lengths': np.array([len(e) for e in encoded], dtype=np.int64),
        'predictor_codes': np.array([v for e in encoded for v in e], dtype=np.int64),
        'predictor_rewards': np.array([r for _, r in self.history], dtype=np.float64),
    })
    return state

  def load_state_dict(self, state: dict) -> None:
    if 'predictor_rng' not in state:
      raise ValueError(f'the saved {state.get("strategy")!r} search was not guided by a '
                       f'predictor: it cannot continue as {self.name!r}')
    self.inner.load_state_dict(state)
    self.rng.bit_generator.state = state['predictor_rng']
    self._reset_history()
    codes = np.asarray(state['predictor_codes']).tolist()
    ends = np.cumsum(state['predictor_lengths'])
    for n, end, reward in zip(state['predictor_lengths'], ends, state['predictor_rewards']):
      arch = self.space.decode(codes[end - n:end])
      self._record(self.space.key(arch), arch, float(reward))


def guide(strategy, predictor_config, seed: int) -> PredictorGuided:
  """``strategy`` guided by the predictor (``strategies.make_strategy`` calls it where
  ``config.search.predictor.enabled``); a one-line error for one it cannot guide."""
  if strategy.name not in GUIDED:
    raise ValueError(f'config.search.predictor.enabled=True with config.search.strategy='
                     f'{strategy.name!r}: the predictor guides {GUIDED}')
  return PredictorGuided(strategy, predictor_config, seed)
