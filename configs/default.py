"""Default configuration: the paper's BlockQNN search on CIFAR-10.

Run with:
  python -m blockqnn_jax.main --config=configs/default.py --workdir=/tmp/blockqnn

Every number the paper fixes is a field here with the paper's value as its default;
other config files override a few of them.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()

  # What to do: 'search' for a block; 'train' / 'transfer_imagenet' for a found one.
  config.mode = 'search'
  config.seed = 0
  # 'cifar10', 'cifar100', any TFDS image-classification name, 'digits' (scikit-learn's
  # bundled 8x8 digits, no download) or 'synthetic' (random CIFAR-shaped data).
  config.dataset = 'cifar10'
  # Where TFDS looks for prepared datasets; '' means $TFDS_DATA_DIR, else TFDS's default.
  config.data_dir = ''
  # 'local' (one child at a time, data-parallel over local devices) or 'ray' (many
  # children at once, on any number of GPUs and machines).
  config.executor = 'local'
  config.ray = ml_collections.ConfigDict()
  config.ray.address = ''          # '' starts a local cluster; 'auto' joins `ray start`'s
  config.ray.max_in_flight = 0     # children at once; 0 = as many as the cluster fits
  # -1 = a GPU per children_per_device children where the cluster has GPUs; a fraction
  # puts several actors on one GPU, each preallocating only its share of the memory.
  config.ray.gpus_per_trial = -1.0
  config.ray.cpus_per_trial = 1.0
  config.ray.max_retries = 2       # re-runs of a child whose worker died
  # Children training at once on each device (threads locally; Ray actors sharing a GPU,
  # each given that share of its memory). More than one helps when children are too
  # small to fill a device; a child out of memory beside others is retried alone.
  config.children_per_device = 1
  # Children built and compiled in background threads while others train, so that
  # compilation is off the critical path (our choice: one is enough when a child's
  # training takes longer than the next one's compilation).
  config.compile_ahead = 1
  # JAX's persistent compilation cache, shared by the driver, Ray workers, restarts and
  # later searches ('' = off); XLA's autotuning results are cached there too.
  config.compilation_cache_dir = '~/.cache/blockqnn_jax/jax_cache'
  # Compile children with XLA's backend optimisations off: about half the compile time of
  # a small child on the CPU, some three times slower steps (our choice: on only where
  # children train for seconds, as in the quickstart).
  config.fast_compile = False
  # The block to train in 'train'/'transfer_imagenet' mode: a best_block.json path, a
  # search workdir, or inline codes as JSON text.
  config.block = ''

  config.search = ml_collections.ConfigDict()
  config.search.strategy = 'qlearning'  # or 'random', the baseline
  # (epsilon, iterations) pairs: 178 iterations, 11,392 blocks in the paper.
  config.search.epsilon_schedule = (
      (1.0, 95), (0.9, 7), (0.8, 7), (0.7, 7), (0.6, 10),
      (0.5, 10), (0.4, 10), (0.3, 10), (0.2, 10), (0.1, 12))
  config.search.blocks_per_iteration = 64
  config.search.max_layers = 23       # layers before the forced terminal
  config.search.learning_rate = 0.01  # Q-learning alpha
  config.search.discount = 1.0        # gamma
  config.search.q_init = 0.5          # MetaQNN's initial Q-value
  config.search.replay_samples = 100  # trajectories replayed after each iteration
  # Reward shaping gives every step before the last R/T; the last step gets the full R
  # ('full', MetaQNN's terminal update) or R/T too ('shaped'). See agent.py.
  config.search.terminal_reward = 'full'

  # reward = accuracy - flops_weight * log(1 + FLOPs / FLOPs of one 3x3 conv cell)
  #                   - density_weight * log(edges / nodes)
  config.reward = ml_collections.ConfigDict()
  config.reward.flops_weight = 0.01    # mu
  config.reward.density_weight = 0.01  # rho

  # Early-stop training of each child (the paper's recipe).
  config.early_stop = ml_collections.ConfigDict()
  config.early_stop.epochs = 12
  config.early_stop.learning_rate = 1e-3  # Adam, betas (0.9, 0.999)
  config.early_stop.lr_decay = 0.2        # learning rate x 0.2 ...
  config.early_stop.lr_decay_epochs = 5   # ... every 5 epochs
  config.early_stop.patience = 0          # >0: stop after that many epochs w/o improvement

  # The search network: stem, 3 stages of `repeats` blocks, filters doubling per stage.
  config.model = ml_collections.ConfigDict()
  config.model.repeats = 2
  config.model.filters = 32
  config.model.template = 'cifar'  # or 'imagenet' (strided stem, 4 stages)

  # Full training of a found block (mode='train'): the paper's final CIFAR recipe.
  config.train = ml_collections.ConfigDict()
  config.train.filters = 64        # the final network's first-stage width
  config.train.repeats = 4         # blocks per stage
  config.train.epochs = 300
  config.train.batch_size = 128
  config.train.learning_rate = 0.1  # SGD, momentum 0.9, weight decay 5e-4
  config.train.momentum = 0.9
  config.train.weight_decay = 5e-4
  config.train.schedule = 'steps'  # 'steps' (x lr_step_factor at lr_steps) or 'cosine'
  config.train.lr_steps = (150, 225)
  config.train.lr_step_factor = 0.1
  config.train.cutout = 0          # side of the cutout square; 0 = off (16 is usual)
  config.train.eval_every_epochs = 1
  config.train.checkpoint_every_seconds = 600  # besides the checkpoint after every epoch

  # Transfer to ImageNet-style data (mode='transfer_imagenet'): the config.train recipe,
  # the ImageNet template, images resized to this size (224 for imagenet2012; 32 or 64
  # for imagenet_resized).
  config.transfer = ml_collections.ConfigDict()
  config.transfer.image_size = 224
  config.transfer.max_eval_examples = 0  # 0 = the whole evaluation split

  config.batch_size = 256
  config.validation_examples = 5000  # held out of the training split for the reward
  config.max_train_examples = 0      # 0 = all; a cap for quick runs
  # Compute dtype of the children: 'float32' or 'bfloat16'. On an H200, bfloat16 was no
  # faster for these small-channel networks, compiled 2.6x slower, and the medium
  # reference block's loss became NaN at step 3 (see README, Performance).
  config.dtype = 'float32'
  return config
