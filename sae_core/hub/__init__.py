"""Pretrained SAEs from the Hugging Face Hub, and our SAEs back to it.

`fetch` gets single files through huggingface_hub's cache (every failure a `HubError`);
`formats` converts SAELens and sparsify files into `Sae` (one function per format);
`registry` lists known releases; `load` loads and checks a set; `pretrained_atlas` measures
a loaded set and writes it as an atlas folder; `export` writes an atlas in the SAELens
layout with a model card and pushes it; `atlas_repo` publishes a whole built atlas (SAEs,
layer map, feature index, presets) and takes one back from the Hub cache, and
`atlas_check` says what a fetched atlas lacks. May import the core modules, `atlas`, and
the file names of `explore` (layer map, feature index).
"""
