"""Transfer a found block to ImageNet-style data (``config.mode = 'transfer_imagenet'``).

  python -m blockqnn_jax.main --config=configs/cifar10.py --config.mode=transfer_imagenet \
      --config.block=SEARCH_WORKDIR --config.dataset=imagenet_resized/64x64 --workdir=DIR

The block is stacked into the ImageNet template (strided stem, four stages) with
``config.transfer.filters`` and ``config.transfer.repeats`` and trained with the
``config.transfer`` recipe, checkpoints and resume of ``train_final.fit``, reporting
top-1 and top-5 accuracy on the dataset's validation split (its test split if it has none).
``config.dataset`` is a TFDS name (``imagenet2012``, ``imagenet_resized/32x32``, any image
classification dataset) or the directory of a prepared TFDS dataset (read with
``tfds.builder_from_directory``, so data built elsewhere works offline).

The input pipeline is ``imagenet_input`` (Grain): worker processes
(``config.transfer.workers``) decode and augment (random-resized crop and flip for
training, centre crop for evaluation) on the host, so the trainer's device-side crop and
flip are off; a batch is a pure function of its position in the run, so the training
checkpoint's epoch and step restore the iterator, and a resumed run reads the batches an
uninterrupted one would. Nothing holds the dataset in memory.
"""

from __future__ import annotations

import os

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from blockqnn_jax import files
from blockqnn_jax import imagenet_input
from blockqnn_jax import train
from blockqnn_jax import train_final
from blockqnn_jax import workdir as workdir_lib


class StreamingRunner:
  """Feeds ``train_final.fit`` from the Grain pipeline; evaluates top-1 and top-5."""

  def __init__(self, trainer: train.Trainer, train_input: imagenet_input.TrainInput,
               eval_input: imagenet_input.EvalInput, mean, std):
    self.trainer, self.train_input, self.eval_input = trainer, train_input, eval_input
    replicated = NamedSharding(trainer.mesh, P())
    self.channels = len(mean)
    self.mean, self.std = jax.device_put((mean, std), replicated)
    self.steps_per_epoch = train_input.steps_per_epoch
    self.batches = None  # the training iterator, started by the run's first epoch
    self._update = jax.jit(trainer.update, donate_argnums=0)
    self._hits = jax.jit(trainer.hits)

  def start_epoch(self, epoch: int, rng, start_step: int) -> None:
    """The run's first epoch (fresh, or resumed from a checkpoint's epoch and step)
    starts the one iterator that then runs through every later epoch."""
    del rng
    if self.batches is None:
      self.batches = self.train_input.iterator(epoch * self.steps_per_epoch + start_step)

  def close(self) -> None:
    """Ends the training iterator's worker processes and frees their shared memory."""
    if self.batches is not None:
      self.batches.close()

  def step(self, step: int, rng):
    images, labels = next(self.batches)
    self.trainer.state, loss = self._update(self.trainer.state, images, labels,
                                            jax.random.fold_in(rng, step), self.mean,
                                            self.std)
    return loss

  def evaluate(self) -> dict:
    top1 = top5 = total = 0
    for images, labels, mask in self.eval_input.batches(self.channels):
      hits = self._hits(self.trainer.state, images, labels, mask, self.mean, self.std)
      top1, top5 = top1 + int(hits[0]), top5 + int(hits[1])
      total += int(mask.sum())
    return {'top1_accuracy': top1 / total, 'top5_accuracy': top5 / total}


def transfer_and_evaluate(config, workdir: str, *, allow_config_change: bool = False) -> dict:
  """Trains the block of ``config.block`` in the ImageNet template; returns the scores. A
  workdir made with another config is refused (``workdir.check_config``) unless
  ``allow_config_change``."""
  os.makedirs(workdir, exist_ok=True)
  recipe = config.transfer
  block = files.load_block(config.block, config.search.max_layers)
  recorded = train_final.workdir_config(config, block)
  workdir_lib.check_config(recorded, workdir, allow_config_change)
  mesh = train.make_mesh()
  train.check_batch_size(recipe.batch_size, mesh)
  sources, num_classes = imagenet_input.open_dataset(config)
  size, workers = recipe.image_size, recipe.workers
  train_input = imagenet_input.TrainInput(
      sources['train'], batch_size=recipe.batch_size, image_size=size, epochs=recipe.epochs,
      seed=config.seed, mesh=mesh, workers=workers, limit=config.max_train_examples)
  eval_input = imagenet_input.EvalInput(
      sources['eval'], batch_size=recipe.batch_size, image_size=size, mesh=mesh,
      workers=workers, limit=recipe.max_eval_examples)
  if train_input.steps_per_epoch == 0:
    raise ValueError(f'transfer.batch_size={recipe.batch_size} is larger than the '
                     f'{train_input.count} training images')
  mean, std = imagenet_input.channel_statistics(sources['train'], size)
  channels = len(mean)
  model_config = train_final.final_model_config(config, recipe)
  model_config.template = 'imagenet'
  model, trainer, schedule = train_final.build_trainer(
      config, recipe, block, model_config, mesh, None, num_classes=num_classes,
      channels=channels, steps_per_epoch=train_input.steps_per_epoch,
      crop_and_flip=False)  # done on the host by the input pipeline
  runner = StreamingRunner(trainer, train_input, eval_input, mean, std)
  train_final.record_config(recorded, workdir)
  try:
    history = train_final.fit(runner, config, recipe, workdir, schedule)
  finally:
    runner.close()
  return train_final.write_summary(
      workdir, config, recipe, block, model, model_config, history, num_classes=num_classes,
      image_shape=(size, size, channels), mean=mean, std=std)
