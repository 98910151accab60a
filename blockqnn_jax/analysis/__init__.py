"""Tools to measure and compare searches, not needed to run one.

Rank correlations (``correlation``), NAS-Bench-201 cells and tabular benchmarks
(``nasbench201``, ``tabular``, ``strategy_comparison``), the synthetic landscape
(``surrogate``), the statistics and figures of the paper-reproduction experiments
(``search_curves``, ``rank_agreement``), and what benchmarks share: the reference blocks
(``reference_blocks``) and a description of the machine (``benchmarking``). The commands
that use them are in ``experiments/``.
"""
