"""Steering: feature edits of the residual stream while the model writes.

`edits` validates a steering request and installs the edit hooks (add a direction, or clamp
a feature's activation); `generation` writes the unsteered and steered continuations as one
batch. May import the core modules, `atlas` and `explore`.
"""
