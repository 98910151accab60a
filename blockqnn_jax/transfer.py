"""``mode=transfer_imagenet``: train a found block on ImageNet-style data.

  python -m blockqnn_jax.main --config=configs/cifar10.py --config.mode=transfer_imagenet \
      --config.block=SEARCH_WORKDIR --config.dataset=imagenet_resized/64x64 --workdir=DIR

The block is stacked into the ImageNet template (strided stem, four stages) with
``config.transfer.filters`` and ``config.transfer.repeats``, trained with the
``config.transfer`` recipe from the streamed input pipeline (``streaming_input``: decoding,
random-resized crop and flip in worker processes), with the checkpoints and resume of
``training.loop.fit``, and scored by top-1 and top-5 accuracy on the dataset's validation
split (its test split if it has none). ``config.dataset`` is a TFDS name (``imagenet2012``,
``imagenet_resized/32x32``, any image classification dataset) or the directory of a
prepared TFDS dataset. Nothing holds the dataset in memory.
"""

from __future__ import annotations

from blockqnn_jax import data as data_lib
from blockqnn_jax import files
from blockqnn_jax import streaming_input
from blockqnn_jax import workdir as workdir_lib
from blockqnn_jax.training import loop
from blockqnn_jax.training import recipes
from blockqnn_jax.training import runners


def transfer_and_evaluate(config, workdir: str, *, allow_config_change: bool = False) -> dict:
  """Trains the block of ``config.block`` in the ImageNet template; returns the scores. A
  workdir made with another config is refused unless ``allow_config_change``."""
  recipe = config.transfer
  block = files.load_block(config.block, config.search.max_layers)
  recorded = loop.check_workdir(config, block, workdir, allow_config_change)
  mesh = data_lib.make_mesh()
  data_lib.check_batch_size(recipe.batch_size, mesh)
  sources, num_classes = streaming_input.open_dataset(config)
  size, workers = recipe.image_size, recipe.workers
  train_input = streaming_input.TrainInput(
      sources['train'], batch_size=recipe.batch_size, image_size=size, epochs=recipe.epochs,
      seed=config.seed, mesh=mesh, workers=workers, limit=config.max_train_examples)
  eval_input = streaming_input.EvalInput(
      sources['eval'], batch_size=recipe.batch_size, image_size=size, mesh=mesh,
      workers=workers, limit=recipe.max_eval_examples)
  if train_input.steps_per_epoch == 0:
    raise ValueError(f'transfer.batch_size={recipe.batch_size} is larger than the '
                     f'{train_input.count} training images')
  mean, std = streaming_input.crop_statistics(sources['train'], size)
  channels = len(mean)
  model_config = recipes.final_model_config(config, recipe)
  model_config.template = 'imagenet'
  totals = loop.epoch_totals(workdir, recipe)
  model, trainer, schedule = recipes.build_trainer(
      config, recipe, block, model_config, mesh, num_classes=num_classes,
      channels=channels, steps_per_epoch=train_input.steps_per_epoch,
      crop_and_flip=False,  # done on the host by the input pipeline
      epoch_totals=totals)
  runner = runners.StreamingRunner(trainer, train_input, eval_input, mean, std)
  workdir_lib.record_config(recorded, workdir)
  try:
    history = loop.fit(runner, config, recipe, workdir, schedule, totals)
  finally:
    runner.close()
  return loop.write_summary(
      workdir, config, recipe, block, model, model_config, history,
      step=int(trainer.state['step']), num_classes=num_classes,
      image_shape=(size, size, channels), mean=mean, std=std)
