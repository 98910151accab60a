"""Every config field with its default, and where each default comes from.

Run with:
  python -m blockqnn_jax.main --config=configs/default.py --workdir=/tmp/blockqnn

The paper's search is ``configs/cifar100.py`` (the arXiv v1 abstract: "We trained the
Q-learning on CIFAR-100"); ``configs/cifar10.py`` runs the same search on CIFAR-10.

Sources, as the comments name them:
- "paper": only what the paper's abstracts or secondary sources confirm (see the design
  notes, "What is confirmed, and what is not"): epsilon-greedy Q-learning, early stop, the
  NSC table, the pre-activation conv cell, experience replay, about 178 iterations,
  searching on CIFAR-100.
- "reported, unconfirmed": values the project's design notes (../shared/DESIGN.md) give
  for the paper that we could not check against its text; we keep them so that the
  search matches that account, and say so.
- "MetaQNN" (Baker et al., ICLR 2017), whose Q-learning BlockQNN builds on.
- "our choice, because ...".
Fields about where and how to run (mode, paths, executors, caches) are ours and change no
result.
"""


import os

import ml_collections


def get_config(variant: str = ''):
  if variant:  # what --config=default:VARIANT passes
    raise ValueError(f'the default config has no variants, not {variant!r}')
  config = ml_collections.ConfigDict()

  # What to do: 'search' for a block; 'train' / 'transfer_imagenet' for a found one.
  config.mode = 'search'
  config.seed = 0
  # 'cifar10', 'cifar100', any TFDS image-classification name, 'digits' (scikit-learn's
  # bundled 8x8 digits, no download), 'synthetic' (random CIFAR-shaped data), or a path:
  # a folder of images in train/CLASS/ folders, a .npz (x_train, y_train, x_test, y_test)
  # or a prepared TFDS directory (docs/running.md, "Your own data"). The paper
  # searched on CIFAR-100 (configs/cifar100.py); our default is CIFAR-10, because the
  # paper's headline result is on it and it is the dataset prepared here.
  config.dataset = 'cifar10'
  # Where TFDS looks for prepared datasets; '' means $TFDS_DATA_DIR, else TFDS's default.
  config.data_dir = ''
  # The side, in pixels, that the images of a folder or a .npz are resized to for the
  # search and mode=train (mode=transfer_imagenet crops to transfer.image_size). Our
  # choice: 32, CIFAR's size, which the search network and its recipe were set for.
  config.image_size = 32
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
  # How a child's epoch runs: 'host' (a Python loop, one dispatched step per batch) or
  # 'device' (one lax.scan over the epoch). Our choice is 'host': on XLA:CPU the scan
  # trained 13 times slower (docs/performance.md); on a GPU, where 'device' spares
  # ~2,100 host dispatches per child, it is still to be measured
  # (experiments/gpu_benchmark.sh).
  config.epoch_loop = 'host'
  # The block to train in 'train'/'transfer_imagenet' mode: a best_block.json path, a
  # search workdir, or inline codes as JSON text.
  config.block = ''

  config.search = ml_collections.ConfigDict()
  # 'qlearning' (paper: epsilon-greedy Q-learning), or a baseline: 'random',
  # 'evolution' (regularized evolution, Real et al. AAAI 2019) or 'local_search' (White
  # et al. 2020: climbs through one-mutation neighbours, restarts at local optima).
  config.search.strategy = 'qlearning'
  # (epsilon, iterations) pairs. About 178 iterations: paper (secondary sources); 64 blocks
  # per iteration (11,392 blocks): reported, unconfirmed. The split over epsilons: ours,
  # measured on NAS-Bench-201 (docs/reproducing.md): the reported split
  # spends 95 iterations (53%) at epsilon 1; 18 (10%) found better architectures at 500
  # evaluations on all three of its data sets and no worse at 100. The later phases keep
  # the reported proportions. strategies.PAPER_QLEARNING holds the reported split.
  config.search.epsilon_schedule = (
      (1.0, 18), (0.9, 13), (0.8, 13), (0.7, 13), (0.6, 19),
      (0.5, 19), (0.4, 19), (0.3, 19), (0.2, 19), (0.1, 26))
  config.search.blocks_per_iteration = 64
  # Layers before the forced terminal: 23 is reported, unconfirmed.
  config.search.max_layers = 23
  # Q-learning's alpha, in two: 'learning_rate' where the target is above Q(s, a),
  # 'learning_rate_decrease' where it is below (hysteretic Q-learning, Matignon et al.
  # 2007). Ours, measured on NAS-Bench-201: MetaQNN's 0.01 for both is random search at
  # 100 evaluations; 1.0 / 0.1 beat regularized evolution at 100 and 500 on its three
  # data sets (strategies/qlearning.py says why). On a noisy reward (a child's early-stop
  # accuracy) the fast increase chases lucky evaluations: lower 'learning_rate' there if
  # that shows.
  config.search.learning_rate = 1.0
  config.search.learning_rate_decrease = 0.1
  # gamma. Ours, measured: MetaQNN's 1 with the fast increase above sends greedy NSC
  # blocks to the depth limit, since a longer block adds more shaped steps (R/T each) to
  # its return: on the synthetic landscape (tests/test_search.py) the late blocks' margin
  # over random search fell from 0.35 to 0.10; 0.8 restores 0.35. On NAS-Bench-201, where
  # every architecture has the same length, 1, 0.8 and 0.5 tie.
  config.search.discount = 0.8
  # Initial Q-value. Ours, measured on NAS-Bench-201: 0, the lowest accuracy, so an
  # untried action never looks better than a tried one and exploring is epsilon's job.
  # MetaQNN's 0.5 is above every reward where accuracies are low (ImageNet16-120's
  # 12-epoch ones are 0.01-0.39), a bonus for untried actions that cost 0.3-0.4 points
  # there at 100 evaluations (and 1.0 did the same on CIFAR-10); on CIFAR-10, whose
  # rewards are 94% above 0.5, the two tie.
  config.search.q_init = 0.0
  # Trajectories replayed from memory after each iteration. Replay: paper; its size is not
  # confirmed. 100 is MetaQNN's, which replays after every model; we replay after every
  # iteration (our choice, because an iteration's blocks are evaluated at once).
  config.search.replay_samples = 100
  # Reward shaping gives every step before the last R/T (reported, unconfirmed); the last step gets
  # the full R ('full', MetaQNN's terminal update) or R/T too ('shaped'). Our choice is
  # 'full', because with 'shaped' and gamma = 1 the greedy policy runs every block to the
  # depth limit (measured: docs/method.md; strategies/qlearning.py).
  config.search.terminal_reward = 'full'
  # How epsilon-greedy explores (and breaks greedy ties): 'uniform' over the legal actions,
  # which is what the paper's "epsilon-greedy" implies on its usual reading, or
  # 'type_first' (a uniform layer type, then a uniform layer of it). Random blocks are
  # about 20 layers deep with 'uniform' at max_layers 23, about 7 with 'type_first'. Our
  # choice is 'type_first', because on the synthetic landscape both reach the same late
  # reward (0.76-0.78, python -m experiments.bench_agent --exploration) while its random
  # blocks (the random phase's, and every exploring step's after it) are a third as deep,
  # so much cheaper to train.
  config.search.exploration = 'type_first'
  # The order of the Q-updates along a trajectory: 'reverse' (last step first, so the
  # reward reaches the first step in one pass: MetaQNN's) or 'forward'. Measured on
  # NAS-Bench-201 (alpha 0.5): 'forward' was worse at 100 and 500 evaluations.
  config.search.update_order = 'reverse'
  # Regularized evolution (strategy='evolution'): population 10 and tournament 3 are
  # NAS-Bench-201's settings for it (its R_EA.py), one child at a time; the population
  # ages (the oldest dies). With more children an iteration than members, the population
  # holds an iteration and the tournament grows with the square root of that growth: 64
  # and 8 at the 64 blocks an iteration above. Measured on NAS-Bench-201
  # (docs/reproducing.md#evolution-in-batches): 10 and 3 kept at 64 an iteration lost
  # 0.1-0.3 points at 500 evaluations to one at a time; scaled, they tie or beat it.
  config.search.population_size = 10
  config.search.tournament_size = 3
  # Predictor-guided proposals (blockqnn_jax/strategies/predictor_guided.py, docs/method.md): the
  # strategy's candidates ranked by a bootstrap ensemble of ridge regressions on the
  # space's features (blockqnn_jax/predictor.py), the best unevaluated one proposed.
  config.search.predictor = ml_collections.ConfigDict()
  # Off: our choice. On NAS-Bench-201 it pays at 100 cells (docs/reproducing.md), but at
  # this schedule a guided search trains about twice the children of an unguided one (which
  # repeats cached blocks; docs/performance.md#the-predictor), and trained NSC children
  # have not yet shown the gain.
  config.search.predictor.enabled = False
  # Ensemble members: 5, an independent trial's (bootstrap ensemble of five ridge
  # regressions), which reached 94.17 / 72.33 / 46.20 at 100 NAS-Bench-201 cells.
  config.search.predictor.members = 5
  # The ridge penalty on 0/1 features. Measured on NAS-Bench-201: 0.3 to 10 within 0.03
  # held-out Spearman (docs/method.md).
  config.search.predictor.ridge = 1.0
  # The predictor fits the rewards with those below this quantile of the evaluated ones
  # raised to it, so that its few parameters tell good from best rather than fitting the
  # failures; 0 fits the rewards as they are. 0.75: chosen among 0, 0.25, 0.5, 0.65 (level
  # with it), 0.75 and 0.9 on NAS-Bench-201 seeds 500-999 at 50 cells; on seeds 0-499, all
  # budgets, 64 of 96 means above 0's and 14 below (docs/reproducing.md).
  config.search.predictor.floor_quantile = 0.75
  # Evaluations before the predictor is trusted (the strategy's own proposals until then):
  # our choice, the size of evolution's random first population. 5 measured no better on
  # NAS-Bench-201 at 50 cells (lower in 19 of 24 means, by 0.03 on average;
  # docs/reproducing.md).
  config.search.predictor.warmup = 10
  # Candidates per proposal: drawn the strategy's own way (its own proposal first), and
  # one or two mutations of the best evaluated (170 in all, mostly mutations of the best,
  # as the independent trial's 200). 20 own: measured on NAS-Bench-201 (500 runs at 100
  # cells, both protocols) level with 50, in 74% of the time (docs/reproducing.md). Local
  # search's candidates are its climb's unproposed neighbours, so neither applies to it.
  config.search.predictor.candidates = 20
  config.search.predictor.best_mutations = 150
  # The strategies whose candidates include those mutations. Not Q-learning: measured on
  # NAS-Bench-201 (12-epoch reward), with them it fell 0.05-0.18 below unguided Q-learning
  # at 150 cells (50 runs), without them it is level or above (100 runs; docs/reproducing.md).
  config.search.predictor.best_mutations_for = ('random', 'evolution')
  # 'ucb' (mean + kappa x spread) or 'thompson' (one ensemble member at random). UCB with
  # kappa 0.5: the independent trial's, measured on NAS-Bench-201 (docs/reproducing.md).
  config.search.predictor.acquisition = 'ucb'
  config.search.predictor.kappa = 0.5
  # The share of proposals after the warm-up left to the strategy, unranked (its own
  # proposal; for local search a random neighbour, its climbs' starts being random anyway),
  # so that ranked proposals do not settle every run in the basin the predictor favours.
  # 0.3: measured on NAS-Bench-201 against 0 (500 runs at 50, 100, 150 and 500 cells:
  # higher or level in 61 of 66 means; docs/reproducing.md); no other value measured for
  # the drawn strategies, 0.5 for local search.
  config.search.predictor.own_share = 0.3
  # Guided local search: a random neighbour of a climb's best until this many of its
  # neighbours are proposed (its predecessor among them), then the predictor's order; a
  # best with no more neighbours is climbed unguided. 8: chosen among 4, 8, 12 and 16 on
  # NAS-Bench-201 (24 neighbours a cell) seeds 500-999, 500 runs at 50, 100 and 150 cells,
  # both protocols: it keeps two thirds of the gain of 0 (ranking from the first, which
  # fell 0.12-0.14 below unguided local search on CIFAR-100 with the 12-epoch reward),
  # where 12 and 16 keep almost none (docs/reproducing.md). A count, not a share: an NSC
  # block has from a few to hundreds of neighbours, and a third of hundreds leaves a climb
  # unguided.
  config.search.predictor.random_first = 8

  # reward = accuracy - flops_weight * log(1 + FLOPs / FLOPs of one 3x3 conv cell)
  #                   - density_weight * log(edges / nodes)
  # The form: paper (the redefined reward); the FLOPs unit: our choice (reward.py). mu and
  # rho are not confirmed: public reimplementations use mu = 1, rho = 8, or 0.5 / 0.5 on
  # differently normalised FLOPs. 0.01 / 0.01 is our choice, because it keeps the reward
  # close to the accuracy: on a CIFAR-10 subset (docs/reproducing.md) no weights
  # ranked blocks by their longer-trained accuracy better than accuracy alone, and heavier
  # ones ranked them worse.
  config.reward = ml_collections.ConfigDict()
  # On NAS-Bench-201's 15,625 cells (docs/reproducing.md) the redefined reward
  # ranks cells by their 200-epoch accuracy far better than the 12-epoch accuracy alone,
  # but only with mu < 0 (about -0.1: favouring FLOPs); every mu > 0 ranks worse. Negative
  # weights are allowed; the default stays until a trained search space confirms it.
  config.reward.flops_weight = 0.01    # mu
  config.reward.density_weight = 0.01  # rho

  # Early-stop training of each child. Early stop itself: paper; this recipe (12 epochs,
  # Adam at 1e-3 x 0.2 every 5 epochs): reported, unconfirmed.
  config.early_stop = ml_collections.ConfigDict()
  config.early_stop.epochs = 12
  config.early_stop.learning_rate = 1e-3  # Adam, betas (0.9, 0.999)
  config.early_stop.lr_decay = 0.2        # learning rate x 0.2 ...
  config.early_stop.lr_decay_epochs = 5   # ... every 5 epochs
  # >0: stop after that many epochs without improvement (our option; 0 = off, the recipe).
  config.early_stop.patience = 0

  # The search network: stem, 3 stages of `repeats` blocks, filters doubling per stage
  # (N = 2, 32 filters: reported, unconfirmed; the templates' exact stems and transitions
  # are our choice, models.py).
  config.model = ml_collections.ConfigDict()
  config.model.repeats = 2
  config.model.filters = 32
  config.model.template = 'cifar'  # or 'imagenet' (strided stem, 4 stages)

  # Full training of a found block (mode='train'). The recipe (SGD, momentum 0.9, lr 0.1,
  # weight decay 5e-4, 300 epochs, steps at 150 and 225, batch 128, crop + flip): reported,
  # unconfirmed; it is the usual CIFAR recipe.
  config.train = ml_collections.ConfigDict()
  # The final network's size is not confirmed (the paper's best CIFAR-10 network has 39.8M
  # parameters): 64 filters and 4 blocks per stage are our choice, a moderate network;
  # widen both to approach the paper's size.
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
  # The reported recipe has none of what config.transfer adds (below): no warm-up, plain
  # momentum, no label smoothing. Weight decay on every parameter, BatchNorm's and biases
  # included: our choice, because the recipe says only "weight decay 5e-4", and it keeps
  # mode=train as it was before config.transfer had its own recipe.
  config.train.warmup_epochs = 0
  config.train.nesterov = False
  config.train.label_smoothing = 0.0
  config.train.decay_norm_and_bias = True
  config.train.cutout = 0          # side of the cutout square; 0 = off (16 is usual)
  config.train.eval_every_epochs = 1  # our choice: the curve costs little on CIFAR
  config.train.checkpoint_every_seconds = 600  # besides the checkpoint after every epoch

  # Transfer to ImageNet-style data (mode='transfer_imagenet'): the block in the ImageNet
  # template, trained with this block's recipe, images resized to `image_size` (224 for
  # imagenet2012; 32 or 64 for imagenet_resized).
  config.transfer = ml_collections.ConfigDict()
  config.transfer.image_size = 224  # the usual ImageNet crop (our choice)
  config.transfer.max_eval_examples = 0  # 0 = the whole evaluation split
  # The network. The paper's ImageNet network is not confirmed: its body text, with the
  # ImageNet table, could not be read here. What we found: the design notes give 77.4%
  # top-1 / 93.5% top-5 for the transferred network; Real et al. (AAAI 2019, Table 2) list
  # "Block-QNN-B" at 75.7 / 92.6 with no parameter count; the abstract of the journal
  # version (arXiv 1808.05584) gives 82.0 / 96.0 for its best network. None gives N or
  # the width.
  # N = 3: reported, unconfirmed (issue 12 gives N = 3 for Block-QNN-B in the paper's
  # ImageNet table; no source we could reach states it).
  config.transfer.repeats = 3
  # 64 filters, so 64 -> 128 -> 256 -> 512 over the four stages: our choice, because those
  # are ResNet's stage widths (He et al. 2016), the usual size at this resolution.
  config.transfer.filters = 64
  # The recipe: the common ResNet-on-ImageNet recipe, as the paper's is not known.
  # 90 epochs, batch 256, 0.1 per 256 images scaled linearly with the batch, 5 epochs of
  # linear warm-up, weight decay 1e-4, momentum 0.9: Goyal et al. 2017 ("Accurate, Large
  # Minibatch SGD"), whose 90-epoch ResNet-50 recipe is the usual one.
  config.transfer.epochs = 90
  config.transfer.batch_size = 256
  config.transfer.learning_rate_per_256 = 0.1  # lr = 0.1 * batch_size / 256
  # Linear, from 0 to the scaled rate (from 0: He et al. 2019; Goyal et al. start at 0.1).
  config.transfer.warmup_epochs = 5
  config.transfer.momentum = 0.9
  config.transfer.weight_decay = 1e-4
  # Cosine decay to 0 after the warm-up: He et al. 2019 ("Bag of Tricks"), after
  # Loshchilov & Hutter's SGDR. 'steps' gives Goyal et al.'s x0.1 at epochs 30, 60, 80.
  config.transfer.schedule = 'cosine'
  config.transfer.lr_steps = (30, 60, 80)
  config.transfer.lr_step_factor = 0.1
  config.transfer.nesterov = True    # Nesterov momentum: He et al. 2019's baseline
  config.transfer.label_smoothing = 0.1  # Szegedy et al. 2016 (Inception-v3)
  # Weight decay on convolution and linear kernels only, none on BatchNorm scales and
  # offsets or on biases: He et al. 2019's "no bias decay".
  config.transfer.decay_norm_and_bias = False
  config.transfer.cutout = 0  # our choice: cutout is a CIFAR regulariser; 0 = off
  # Our choice: 50,000 validation images cost some 4% of an epoch of 1.28M.
  config.transfer.eval_every_epochs = 1
  # Our choice: an ImageNet epoch takes long, so a crash loses at most 10 minutes.
  config.transfer.checkpoint_every_seconds = 600
  # Grain worker processes that decode and augment (0 = in the training process). Our
  # choice: all CPU cores but one, which the training process needs to receive the
  # batches and feed the devices (on a 2-core machine 1 worker beat 2;
  # docs/performance.md).
  config.transfer.workers = max(1, (os.cpu_count() or 2) - 1)

  config.batch_size = 256  # of the early-stop training: reported, unconfirmed
  # Held out of the training split for the reward (the test split is never used): our
  # choice, the usual 45,000 / 5,000 CIFAR split.
  config.validation_examples = 5000
  config.max_train_examples = 0      # 0 = all; a cap for quick runs
  # Compute dtype of the children: 'float32' or 'bfloat16'. Our choice is float32,
  # because on an H200 bfloat16 was no faster for these small-channel networks, compiled
  # 2.6x slower, and the medium reference block's loss became NaN at step 3
  # (docs/performance.md).
  config.dtype = 'float32'

  # Several hosts as one job (mode='transfer_imagenet' only; a search spreads over hosts
  # with Ray). coordinator_address '' = this host alone; 'auto' = read the cluster's
  # environment (SLURM, Open MPI, ...); 'host:port' of process 0 with num_processes and
  # this process's process_id = a job started by hand, one command per process.
  config.distributed = ml_collections.ConfigDict()
  config.distributed.coordinator_address = ''
  config.distributed.num_processes = 1
  config.distributed.process_id = 0
  return config
