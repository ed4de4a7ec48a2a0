"""Training: SAEs for many hookpoints from one LM forward per batch.

`loop` is the training loop (`train_saes`); `trainer` holds the optimizer steps of one SAE
(`SaeTrainer`) and of every layer on one LM batch (`MultiTrainer`); `topk_grad` the
hand-written sparse backward of a TopK step; `whole` the whole-batch numbers a step asks for
(answered by one process, or by the data-parallel ranks of `ranks`); `shuffle` the buffer
that mixes activations across LM batches; `checkpoint` the resumable state. May import the
core modules of `sae_core` only.
"""
