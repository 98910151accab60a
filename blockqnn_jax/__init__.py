"""BlockQNN in JAX: block-wise network architecture search with tabular Q-learning.

Modules: ``nsc`` (block codes), ``search_space`` and ``agent`` (what to try next),
``search`` (the loop), ``models``/``data``/``train`` (building and scoring a child).
"""
