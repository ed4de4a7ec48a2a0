"""The Tour tab: a sparse autoencoder in plain words and one example that runs with one click
(`tab`), its words as Markdown (`text`)."""
