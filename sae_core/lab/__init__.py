"""The lab: SAEs on synthetic data with known features, to compare training recipes.

`synthetic` draws activations from a known dictionary (superposition, power-law
frequencies, correlated groups, noise); `fit` trains one SAE on such rows with the
library's `SaeTrainer` for any `TrainConfig`; `recovery` scores the result against the
true dictionary (MMCS, share recovered) and on held-out rows (FVU, L0, dead). May import
the core modules of `sae_core` and `sae_core.train` only.
"""
