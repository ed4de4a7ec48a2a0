"""The Live view tab: layout and callbacks (`tab`), the token heatmap and tables (`view`)."""
