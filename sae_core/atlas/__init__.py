"""Atlases: one SAE per layer of a model, built, evaluated and stored in a folder.

`layout` names the files of an atlas folder, reads them and holds `LoadedAtlas`, the
in-memory atlas that `explore` and `steer` functions take; `build` trains and writes one
(`build_atlas`); `evaluate` measures held-out FVU, L0, dead latents and CE loss recovered.
May import the core modules and `train`.
"""
