"""BlockQNN in JAX: block-wise network architecture search with tabular Q-learning.

Modules: ``nsc`` (block codes), ``search_space`` and ``agent`` (what to try next),
``search`` (the loop), ``models``, ``data``, ``child`` and the ``training`` library
(building, training and scoring a network), ``train_final`` and ``transfer`` (the other
modes), ``analysis`` (tools to measure and compare searches). docs/layout.md has the rest.
"""
