"""The app's UI: everything Gradio, Plotly, pandas and HTML, over `sae_core`.

One package per tab (`tour`, `layer_map`, `features`, `steering`, `live`, `search`, `saes`)
holds its layout and callbacks (`tab.py`, with `build_*_tab(picker)`) and its views (figures,
tables and HTML from plain data, no Gradio there). `serving` is what the tabs run on:
`session` loads each model and atlas once for all visitors, the build worker, public mode,
the queue, the atlas chosen at start, streaming, errors and deep links. `shared` holds what
several tabs draw with (sites, plots, names and lineage figures, presenter mode, a feature
chosen in one tab for the Features tab). `api` answers the named API endpoints from several
tabs' code, so it sits above them. `app.py` puts the tabs together. Imports run down: `api` ->
tabs -> `serving`, `shared`; may import anything in `sae_core`; nothing in `sae_core` imports
this package.
"""
