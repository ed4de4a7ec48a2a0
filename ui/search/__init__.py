"""The Search tab: features by the text they fire on (all layers) or by their label (`tab`)."""
