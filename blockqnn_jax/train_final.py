"""``mode=train``: train a found block in full on its dataset, resumable at any moment.

  python -m blockqnn_jax.main --config=configs/cifar10.py --config.mode=train \
      --config.block=SEARCH_WORKDIR --workdir=DIR

The block comes from ``config.block`` (a best_block.json, a search workdir or inline codes)
and is stacked into the template ``config.model.template`` with ``config.train.filters``
and ``config.train.repeats``, trained with the ``config.train`` recipe on every training
image (the dataset held on the devices) and evaluated on the test split (never during the
search, only here). ``DIR/config.json`` holds the config: a rerun with another block,
dataset or recipe is refused, one with more epochs extends the run. The trained network:
``training.inference.load_model(DIR)``.
"""

from __future__ import annotations

from blockqnn_jax import data as data_lib
from blockqnn_jax import files
from blockqnn_jax import workdir as workdir_lib
from blockqnn_jax.training import loop
from blockqnn_jax.training import recipes
from blockqnn_jax.training import runners


def train_and_evaluate(config, workdir: str, *, allow_config_change: bool = False) -> dict:
  """Trains the block of ``config.block`` in full; returns the final scores. A workdir
  made with another config is refused unless ``allow_config_change``."""
  recipe = config.train
  block = files.load_block(config.block, config.search.max_layers)
  recorded = loop.check_workdir(config, block, workdir, allow_config_change)
  mesh = data_lib.make_mesh()
  data_lib.check_batch_size(recipe.batch_size, mesh)
  data = data_lib.device_data(config, mesh, batch_size=recipe.batch_size, final=True)
  model_config = recipes.final_model_config(config, recipe)
  totals = loop.epoch_totals(workdir, recipe)
  model, trainer, schedule = recipes.build_trainer(
      config, recipe, block, model_config, mesh, num_classes=data.num_classes,
      channels=data.image_shape[-1],
      steps_per_epoch=len(data.train_labels) // recipe.batch_size, epoch_totals=totals)
  runner = runners.InMemoryRunner(trainer, data, recipe.batch_size)
  workdir_lib.record_config(recorded, workdir)
  history = loop.fit(runner, config, recipe, workdir, schedule, totals)
  return loop.write_summary(workdir, config, recipe, block, model, model_config, history,
                            step=int(trainer.state['step']), num_classes=data.num_classes,
                            image_shape=data.image_shape, mean=data.mean, std=data.std)
