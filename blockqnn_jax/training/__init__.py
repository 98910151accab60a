"""The training library every mode shares: the search's children, ``mode=train`` and
``mode=transfer_imagenet``.

``steps``: the train state and the pure, jitted train and evaluation steps.
``recipes``: optimizers, learning-rate schedules, augmentation, the network a recipe trains.
``runners``: feeding the steps from data on the devices or from a streamed input pipeline.
``loop``: ``fit``, the epoch loop with its checkpoints, resume and summary.
``inference``: ``load_model`` and ``predict`` on a trained workdir.
"""
