"""A predictor-guided search of NSC blocks (config.search.predictor) through run_search:
killed and resumed it proposes what an uninterrupted one proposes; each child's record
holds the reward predicted for it before the predictor saw it; TensorBoard shows the
predictions and their per-iteration rank correlation."""

import numpy as np
import pytest
from scipy import stats
from tensorboard.backend.event_processing import event_accumulator

from blockqnn_jax import predictor
from blockqnn_jax import search
from blockqnn_jax import search_space
from tests.searches import CountingEvaluator
from tests.searches import assert_same_outcome
from tests.searches import crash_then_resume
from tests.searches import guided
from tests.searches import outcome
from tests.searches import resume_config


def guided_config():
  """tests/searches.py's six iterations of six blocks, guided from the second on."""
  return guided(resume_config())


@pytest.fixture(scope='module')
def guided_search(tmp_path_factory):
  """The guided search run once to the end: (its workdir, its outcome, its evaluations)."""
  workdir = tmp_path_factory.mktemp('guided')
  evaluator = CountingEvaluator()
  search.run_search(guided_config(), str(workdir), evaluator)
  return workdir, outcome(workdir), evaluator.calls


@pytest.mark.parametrize('crash_at', [9, 20])  # in the second and the fourth iteration
def test_a_killed_guided_search_resumes_to_what_an_uninterrupted_one_proposes(
    tmp_path, guided_search, crash_at):
  _, expected, expected_calls = guided_search
  calls = crash_then_resume(guided_config(), tmp_path, crash_at)
  assert_same_outcome(outcome(tmp_path), expected)
  assert calls == expected_calls


def test_a_killed_guided_local_search_resumes_to_what_an_uninterrupted_one_proposes(
    tmp_path):
  """Local search takes the predictor's ranking of its climb's neighbours (no candidates
  drawn), so its resume is its own path through the wrapper."""
  config = guided_config()
  config.search.strategy = 'local_search'
  whole = CountingEvaluator()
  search.run_search(config, str(tmp_path / 'whole'), whole)
  calls = crash_then_resume(config, tmp_path / 'resumed', 20)
  assert_same_outcome(outcome(tmp_path / 'resumed'), outcome(tmp_path / 'whole'))
  assert calls == whole.calls
  records = outcome(tmp_path / 'whole')[0]
  assert sum(r.get('predicted_reward') is not None for r in records) >= 24


def test_each_record_holds_the_prediction_made_before_its_iteration_was_fed_back(
    guided_search):
  """The logged prediction is the one of a predictor fit on the earlier iterations'
  distinct blocks, in the order they were fed back, and on nothing of its own iteration."""
  _, (records, _, _), _ = guided_search
  config = guided_config()
  space = search_space.NSCSpace(config.search.max_layers)
  model = predictor.EnsemblePredictor(space.feature_size, config.search.predictor.members,
                                      config.search.predictor.ridge, config.seed,
                                      floor_quantile=config.search.predictor.floor_quantile)
  seen, predicted_iterations = set(), 0
  for iteration in range(6):
    rows = [r for r in records if r['iteration'] == iteration]
    features = np.stack([space.features(space.from_codes(r['codes'])) for r in rows])
    if model.points < 2:
      assert not any('predicted_reward' in r for r in rows)
    else:
      mean, spread = model.predict(features)
      np.testing.assert_allclose([r['predicted_reward'] for r in rows], mean, rtol=1e-9)
      np.testing.assert_allclose([r['predicted_spread'] for r in rows], spread, rtol=1e-9)
      predicted_iterations += 1
    for row, x in zip(rows, features):
      if row['hash'] not in seen:
        seen.add(row['hash'])
        model.add(x, row['reward'])
  assert predicted_iterations == 5


def spearman_per_iteration(records) -> dict:
  """What the search should show: each iteration's Spearman between the predicted and the
  real rewards of the blocks it trained (not cached repeats), where two or more."""
  expected = {}
  for iteration in range(6):
    fresh = [r for r in records if r['iteration'] == iteration and not r['cached']]
    if len(fresh) > 1:
      expected[iteration] = stats.spearmanr([r['predicted_reward'] for r in fresh],
                                            [r['reward'] for r in fresh]).statistic
  return expected


def test_tensorboard_shows_predicted_against_actual_and_each_iteration_s_spearman(
    guided_search):
  workdir, (records, _, _), _ = guided_search
  events = event_accumulator.EventAccumulator(str(workdir), size_guidance={'scalars': 0})
  events.Reload()
  predicted = [r for r in records if 'predicted_reward' in r]
  # Written as fed (sample order), stepped by log line: compared in step order.
  shown = sorted(events.Scalars('block/predicted_reward'), key=lambda e: e.step)
  assert [e.step for e in shown] == [r['index'] for r in predicted]
  assert [e.value for e in shown] == pytest.approx(
      [r['predicted_reward'] for r in predicted], rel=1e-6)
  expected = spearman_per_iteration(predicted)
  spearman = events.Scalars('iteration/predictor_spearman')
  assert len(expected) == 5
  assert {e.step: e.value for e in spearman} == pytest.approx(expected, rel=1e-6)
  assert 'custom_scalars__config__' in events.Tags()['tensors']


def test_the_spearman_leaves_out_repeats_of_blocks_the_predictor_had_seen(tmp_path):
  """Blocks of up to two layers: the last iteration repeats a block evaluated before, which
  the iteration's correlation leaves out (it counts only the iteration's own evaluations)."""
  config = guided_config()
  config.search.max_layers = 2
  search.run_search(config, str(tmp_path), CountingEvaluator())
  records = [r for r in outcome(tmp_path)[0] if 'predicted_reward' in r]
  assert any(r['cached'] for r in records)
  expected = spearman_per_iteration(records)
  events = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={'scalars': 0})
  events.Reload()
  shown = {e.step: e.value for e in events.Scalars('iteration/predictor_spearman')}
  assert expected and shown == pytest.approx(expected, rel=1e-6)
