"""SAE Atlas core: a library with no UI code (no gradio, plotly or pandas; tests check it).

The top-level modules are what every package shares: `config` (frozen configs), `lm` (load
a causal LM, find the module of a hookpoint), `hooks` (capture and edit activations in one
forward, thread-scoped), `activations` (hookpoint names, the massive-activation rule),
`norms` (typical residual norms), `sae` (the SAE and its SAELens layout), `metrics` (pure
quality functions), `corpus` (texts and token windows), `progress` (progress reports) and
`cli_options` (command-line options from the configs). They import nothing from the
subpackages. The subpackages, in the order data flows: `train` (SAEs for many layers from
one forward per batch), `atlas` (the build pipeline and the folder it writes), `hub`
(pretrained SAEs in and out), `explore` (what the features mean) and `steer` (editing
generation with features).
"""
