"""The app's tabs: one module and one build_*_tab() each; no math here."""
