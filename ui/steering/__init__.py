"""The Steering tab: layout and callbacks (`tab`), its form's limits and parsing (`inputs`),
the two texts written whole or streamed (`write`), the concept finder (`finder`), the judge's
scores (`judge`) and the presets (`presets`). The Tour reuses `tab` and `write`."""
