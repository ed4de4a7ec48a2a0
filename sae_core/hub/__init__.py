"""Pretrained SAEs from the Hugging Face Hub, and our SAEs back to it.

`fetch` gets single files through huggingface_hub's cache (every failure a `HubError`);
`formats` converts SAELens and sparsify files into `Sae` (one function per format);
`registry` lists known releases; `load` loads and checks a set; `pretrained_atlas` measures
a loaded set and writes it as an atlas folder; `export` writes an atlas in the SAELens
layout with a model card and pushes it. May import the core modules and `atlas`.
"""
