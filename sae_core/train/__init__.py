"""Training: SAEs for many hookpoints from one LM forward per batch.

`trainer` holds one SAE's optimizer step (`SaeTrainer`), the multi-layer loop
(`MultiTrainer`, `train_saes`); `topk_grad` the hand-written sparse backward of a TopK step;
`shuffle` the buffer that mixes activations across LM batches; `checkpoint` the resumable
state. May import the core modules of `sae_core` only.
"""
