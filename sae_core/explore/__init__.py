"""What the features of an atlas mean, as plain data for the app or a notebook.

`labels` tags corpus tokens with spaCy; `consistency` and `layermap` give each feature a
label and count consistent features per layer against neuron and random controls;
`feature_stats` and `feature_index` build the per-feature index of top contexts;
`feature_page` reads one feature's page from it, with the `logit_lens`; `live` finds the
features of every token of a text; `search` finds features by text or label; `concepts`
finds features for a word. Functions that need a loaded atlas take `atlas.layout.LoadedAtlas`.
May import the core modules and `atlas`.
"""
