"""Real NSC children, measured once: how well the predictor ranks trained blocks it has not
seen, per NSC encoding, against the number of blocks it was trained on.

Collects: a random-strategy search (``run_search``) on scikit-learn's 8x8 digits at
``configs/quickstart.py``'s scale (2-epoch children, 8 filters, 1 block per stage, up to
4 layers), 32 iterations of 8 blocks: 256 samples, 224 distinct blocks. Its workdir keeps
every result, so a rerun trains nothing again (the search resumes, finished). The
training settings are fixed here; a rerun continues the workdir where defaults unrelated
to training changed.

Analyses: each distinct block once (its logged reward). For each NSC encoding
(``search_space.NSC_ENCODINGS``), ``--repeats`` random splits: ``--held_out`` blocks
scored, and for each training size the predictor (``predictor.EnsemblePredictor``,
``config.search.predictor``'s members and ridge; the rewards as they are, not floored as
the search's, since this ranks every held-out block) trained on that many others; Spearman
and Kendall tau-b of its predictions against the held-out rewards
(``analysis.correlation``). Prints one JSON object and writes the figure.
``--analyse_only`` analyses what the workdir holds so far, training nothing.

  nice -n 10 python -m experiments.predictor_study --workdir=/tmp/predictor_study \
    --figure=docs/predictor_study_digits.png
"""

from __future__ import annotations

import json

from absl import app
from absl import flags
import numpy as np

from blockqnn_jax import results
from blockqnn_jax import search
from blockqnn_jax import search_space
from blockqnn_jax.analysis import predictor_study
from configs import quickstart

_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the study search keeps its results.')
_FIGURE = flags.DEFINE_string('figure', 'docs/predictor_study_digits.png',
                              'Where the figure is written.')
_SIZES = flags.DEFINE_list('sizes', ['25', '50', '100', '150'], 'Training blocks per fit.')
_HELD_OUT = flags.DEFINE_integer('held_out', 64, 'Blocks scored in each split.')
_REPEATS = flags.DEFINE_integer('repeats', 25, 'Random splits.')
_ANALYSE_ONLY = flags.DEFINE_bool('analyse_only', False,
                                  'Analyse what the workdir holds, training nothing.')
flags.mark_flag_as_required('workdir')

ITERATIONS = 32  # x 8 blocks: 256 samples, 224 distinct blocks at seed 0


def study_config():
  """The quickstart's digits children, sampled by random search."""
  config = quickstart.get_config()
  config.search.strategy = 'random'
  config.search.epsilon_schedule = ((1.0, ITERATIONS),)
  config.search.predictor.enabled = False
  return config


def collect(workdir: str) -> dict:
  """Trains the study's blocks, or finds them trained in ``workdir``."""
  return search.run_search(study_config(), workdir, allow_config_change=True)


def analyse(workdir: str, sizes: list[int], held_out: int, repeats: int,
            figure: str) -> dict:
  """Each encoding's held-out curves on the distinct blocks ``workdir`` holds."""
  config = study_config()
  rows = predictor_study.distinct_results(results.read_results(workdir))
  rewards = np.array([r['reward'] for r in rows])
  curves = {}
  for encoding in search_space.NSC_ENCODINGS:
    space = search_space.NSCSpace(config.search.max_layers, encoding)
    features = np.stack([space.features(space.from_codes(r['codes'])) for r in rows])
    curves[encoding] = predictor_study.held_out_curves(
        features, rewards, sizes, held_out, repeats, config.search.predictor.members,
        config.search.predictor.ridge)
  predictor_study.plot(curves, figure, f'Predictor on {len(rows)} trained NSC blocks '
                       f'(digits, 2 epochs), {repeats} random splits')
  return {'blocks': len(rows), 'held_out': held_out, 'repeats': repeats,
          'reward_range': [round(float(rewards.min()), 4), round(float(rewards.max()), 4)],
          'correlations': {e: predictor_study.summarize(c) for e, c in curves.items()}}


def main(argv):
  del argv
  if not _ANALYSE_ONLY.value:
    summary = collect(_WORKDIR.value)
    print(json.dumps({k: summary[k] for k in ('blocks_sampled', 'blocks_evaluated',
                                              'seconds')}))
  print(json.dumps(analyse(_WORKDIR.value, [int(s) for s in _SIZES.value], _HELD_OUT.value,
                           _REPEATS.value, _FIGURE.value)))


if __name__ == '__main__':
  app.run(main)
