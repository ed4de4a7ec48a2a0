"""SAE Atlas core: load a causal LM, capture its layers, train and load sparse autoencoders."""
