"""The app's UI: everything Gradio, Plotly, pandas and HTML, over `sae_core`.

`session` loads each model and atlas once for all visitors; `*_view` modules and `plots`
turn plain data from `sae_core.explore` into figures, tables and HTML (no Gradio there);
one module per tab (`layer_map`, `features`, `live`, `search`, `steering`, `saes`) builds
the tab with `build_*_tab(picker)` and holds its callbacks; `choice` carries a feature
chosen in one tab to the Features tab. `app.py` puts the tabs together. May import
anything in `sae_core`; nothing in `sae_core` imports this package.
"""
