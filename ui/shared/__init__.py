"""Pieces several tabs use: layer keys of sites (`sites`), plots over layers (`plots`), the
names and lineage figures (`names_view`, `lineage_view`), the presenter mode's accordions
(`present`) and a feature chosen in one tab for the Features tab (`choice`). Imports no tab and
nothing of `serving`.
"""
