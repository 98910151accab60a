"""blockqnn_jax.analysis: the statistics and figures of the paper-reproduction experiments
on hand-made data (no training, figures drawn headless), the reference blocks and the
hardware line of the benchmarks; and the input pipeline benchmark's command."""

import pathlib
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

from blockqnn_jax import nsc
from blockqnn_jax.analysis import benchmarking
from blockqnn_jax.analysis import rank_agreement
from blockqnn_jax.analysis import reference_blocks
from blockqnn_jax.analysis import search_curves
from configs import default
from configs import quickstart

ROOT = pathlib.Path(__file__).resolve().parents[1]
CIFAR10_DIR = ROOT.parent / 'shared' / 'data' / 'tfds' / 'cifar10' / '3.0.2'  # bench_pipeline's


def record(iteration, accuracy, block_hash='h'):
  return {'iteration': iteration, 'accuracy': accuracy, 'hash': block_hash}


def test_iteration_stats_are_each_iterations_mean_and_top_k():
  records = [record(1, 0.9), record(0, 0.2), record(0, 0.8), record(1, 0.1), record(0, 0.5)]
  stats = search_curves.iteration_stats(records, top_k=2)
  assert stats['iteration'] == [0, 1]
  assert stats['mean'] == pytest.approx([0.5, 0.5])
  assert stats['top_k'] == pytest.approx([0.65, 0.5])  # (0.8 + 0.5) / 2; (0.9 + 0.1) / 2
  assert search_curves.iteration_stats(records, top_k=5)['top_k'] == pytest.approx([0.5, 0.5])


def test_best_distinct_counts_each_architecture_once():
  records = [record(0, 0.9, 'a'), record(1, 0.7, 'b'), record(2, 0.9, 'a'), record(2, 0.8, 'c')]
  assert search_curves.best_distinct(records, 2) == [0.9, 0.8]


def test_across_seeds_averages_each_iteration():
  per_seed = [{'iteration': [0, 1], 'mean': [0.2, 0.4], 'top_k': [0.5, 0.9]},
              {'iteration': [0, 1], 'mean': [0.4, 0.4], 'top_k': [0.7, 0.7]}]
  summary = search_curves.across_seeds(per_seed)
  assert summary['mean'] == pytest.approx([0.3, 0.4])
  assert summary['mean_std'] == pytest.approx([0.1, 0.0])
  assert summary['top_k'] == pytest.approx([0.6, 0.8])
  assert summary['top_k_std'] == pytest.approx([0.1, 0.1])


def test_epsilon_phases_start_where_the_schedule_says():
  assert search_curves.epsilon_changes(((1.0, 3), (0.5, 2), (0.1, 1))) == [
      (0, 1.0), (3, 0.5), (5, 0.1)]


def test_q_vs_random_figure_draws_each_strategys_curves(tmp_path):
  """The lines drawn are the summary's numbers (iterations counted from 0, as in the
  records), each under its strategy's label, and the epsilon phases are marked between
  iterations."""
  q_stats = {'iteration': [0, 1, 2], 'mean': [0.4, 0.5, 0.6], 'mean_std': [0.0, 0.1, 0.1],
             'top_k': [0.6, 0.7, 0.8], 'top_k_std': [0.1, 0.0, 0.1]}
  random_stats = {'iteration': [0, 1, 2], 'mean': [0.3, 0.3, 0.2], 'mean_std': [0.0] * 3,
                  'top_k': [0.5, 0.4, 0.45], 'top_k_std': [0.0] * 3}
  summary = {'seeds': 2, 'qlearning': q_stats, 'random': random_stats}
  path = tmp_path / 'q_vs_random.png'
  figure = search_curves.plot(summary, ((1.0, 2), (0.1, 1)), 5, str(path))
  assert Image.open(path).size == (9 * 120, 5 * 120)
  axes, = figure.axes
  curves = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
            for line in axes.get_lines() if not line.get_label().startswith('_')}
  assert curves == {'qlearning: mean': ([0, 1, 2], pytest.approx(q_stats['mean'])),
                    'qlearning: top-5': ([0, 1, 2], pytest.approx(q_stats['top_k'])),
                    'random: mean': ([0, 1, 2], pytest.approx(random_stats['mean'])),
                    'random: top-5': ([0, 1, 2], pytest.approx(random_stats['top_k']))}
  phases = [list(line.get_xdata()) for line in axes.get_lines()
            if line.get_label().startswith('_')]
  assert phases == [[-0.5, -0.5], [1.5, 1.5]]


CONV1, CONV3, CONV5 = ([[1, 1, k, 0, 0], [2, 7, 0, 0, 0]] for k in (1, 3, 5))


def fake_measurements():
  """Early-stop accuracy rises with the FLOPs and the long accuracy falls with them, so
  the early accuracy ranks them backwards and a heavy FLOPs weight exactly right."""
  return [
      {'codes': CONV1, 'early_accuracy': 0.5, 'long_accuracy': 0.9, 'ok': True},
      {'codes': CONV3, 'early_accuracy': 0.6, 'long_accuracy': 0.8, 'ok': True},
      {'codes': CONV5, 'early_accuracy': 0.7, 'long_accuracy': 0.7, 'ok': True},
      {'codes': CONV3, 'early_accuracy': 0.0, 'long_accuracy': 0.99, 'ok': False},
  ]


def test_correlations_over_the_reward_grid():
  summary = rank_agreement.correlations(
      fake_measurements(), mus=[0.0, 100.0], rhos=[0.0, 1.0], filters=32)
  assert summary['blocks'] == 3  # the failed child is left out
  assert summary['early_accuracy'] == {'spearman': pytest.approx(-1.0),
                                       'kendall': pytest.approx(-1.0)}
  # One-layer blocks have one density, so rho changes nothing; mu = 100 ranks by FLOPs.
  assert summary['reward']['spearman'] == [[pytest.approx(-1.0)] * 2, [pytest.approx(1.0)] * 2]
  assert summary['reward']['kendall'] == [[pytest.approx(-1.0)] * 2, [pytest.approx(1.0)] * 2]


def test_early_stop_correlation_figure_draws_the_blocks_and_the_grid(tmp_path):
  """The scatter holds the successful blocks' (early, long) accuracies; the heat map is
  Spearman's rho over (mu, rho), one row per mu, with each cell's value written on it."""
  records = fake_measurements()
  summary = rank_agreement.correlations(records, [0.0, 0.1, 1.0], [0.0, 8.0], 32)
  path = tmp_path / 'early_stop_correlation.png'
  figure = rank_agreement.plot(records, summary, str(path))
  assert Image.open(path).size == (11 * 120, int(4.5 * 120))
  scatter, heat = figure.axes[:2]
  points, = scatter.collections
  np.testing.assert_allclose(points.get_offsets(), [[0.5, 0.9], [0.6, 0.8], [0.7, 0.7]])
  image, = heat.images
  grid = np.array(summary['reward']['spearman'])
  assert grid.shape == (3, 2)
  np.testing.assert_allclose(image.get_array(), grid)
  assert [text.get_text() for text in heat.texts] == [f'{v:.2f}' for v in grid.ravel()]


def test_the_long_recipe_stretches_epochs_and_decay():
  config = quickstart.get_config()
  stretched = rank_agreement.long_recipe(config, 4)
  assert (stretched.early_stop.epochs, stretched.early_stop.lr_decay_epochs) == (
      4 * config.early_stop.epochs, 4 * config.early_stop.lr_decay_epochs)
  assert stretched.early_stop.learning_rate == config.early_stop.learning_rate
  assert config.early_stop.epochs == quickstart.get_config().early_stop.epochs


def test_sampled_blocks_are_distinct_and_seeded():
  search_config = default.get_config().search
  blocks = rank_agreement.sample_blocks(search_config, 20, seed=3)
  assert len({b.canonical_hash() for b in blocks}) == 20
  assert blocks == rank_agreement.sample_blocks(search_config, 20, seed=3)
  assert all(isinstance(b, nsc.Block) for b in blocks)
  search_config.max_layers = 1  # 10 one-layer blocks exist
  with pytest.raises(ValueError, match='--k=11 is more distinct blocks than the space gave'):
    rank_agreement.sample_blocks(search_config, 11, seed=0)


def test_the_reference_blocks_load_by_name(tmp_path):
  blocks = reference_blocks.load()
  assert {name: len(block) for name, block in blocks.items()} == {
      'small': 3, 'medium': 8, 'deep': 23}
  (tmp_path / 'one.json').write_text('{"conv": [[1, 1, 3, 0, 0], [2, 7, 0, 0, 0]]}')
  assert reference_blocks.load(tmp_path / 'one.json') == {
      'conv': nsc.Block((nsc.Layer(1, nsc.CONV, 3, 0, 0),))}


def test_the_hardware_line_names_devices_cpu_and_jax():
  line = benchmarking.hardware()
  device = jax.devices()[0]
  assert line.startswith(f'{jax.device_count()} x {device.device_kind} ({device.platform}), ')
  assert benchmarking.cpu() in line and line.endswith(f'jax {jax.__version__}')


@pytest.mark.skipif(not CIFAR10_DIR.is_dir(),
                    reason=f'CIFAR-10 (for the mock JPEGs) is not prepared at {CIFAR10_DIR}')
def test_the_pipeline_benchmark_ends_quietly():
  """Grain's worker processes hand batches over in shared memory: closing the iterator
  frees all of it, so the run ends without the resource tracker's leak warning."""
  run = subprocess.run(
      [sys.executable, '-m', 'experiments.bench_pipeline', '--dataset=jpeg_mock',
       '--mock_images=32', '--image_size=32', '--batch_size=16', '--batches=3',
       '--workers=2'],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
  assert '"images_per_second"' in run.stdout.splitlines()[-1]
  assert 'leaked' not in run.stderr, run.stderr
